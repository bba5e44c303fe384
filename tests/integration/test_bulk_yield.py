"""Bulk work steps aside while a page is in flight (herald/urgency.py), on the real Redis and the FCM fake.

Issue 11: with the urgent lane alone, a page during a 30,000-device burst still took 3.5x its idle time: its
stages shared the CPU, the database and the provider with the burst's sends (bench/RESULTS.md). A page's
deliver batches now mark Redis while they run, and bulk sends hold (a bounded while) until the marks lapse.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import urgency
from herald.channels.fcm.provider import FcmChannel
from herald.channels.types import Message, Payload, Target
from herald.lanes import URGENT_QUEUE
from herald.settings import get_settings
from herald.taskbase import HeraldTask
from tests.integration.conftest import fresh_fakes, wait_until


def busy() -> bool:
    """Whether a page is in flight, as a bulk sender would see it."""
    current = urgency.marks()
    return current is not None and current.busy()


# A private app: herald's own must keep only its routed tasks (tests/integration/test_routing_table.py).
probes = Celery("tests-urgency", set_as_current=False)


@probes.task(base=HeraldTask, name="tests.urgency.probe", page_stage=True, shared=False)
def probe() -> bool:
    """A stage that marks when it runs for a page (as a deliver batch does)."""
    return busy()


@probes.task(base=HeraldTask, name="tests.urgency.other", shared=False)
def other_stage() -> bool:
    """A stage that never marks (as ingest, enrich and resolve: the page is not at its provider yet)."""
    return busy()


def run_probe(queue: str, task: Any = probe) -> bool:
    task.push_request(id=f"probe-{queue}", delivery_info={"routing_key": queue})
    try:
        return bool(task())
    finally:
        task.pop_request()


@pytest.fixture
def marks(clean: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[urgency.Marks]:
    monkeypatch.setenv("HERALD_BULK_YIELD", "true")  # off by default: niceness is the default's mechanism
    get_settings.cache_clear()
    urgency.marks.cache_clear()
    current = urgency.marks()
    assert current is not None, "the tests' broker is Redis and the hold is on: marks are on"
    yield current
    monkeypatch.delenv("HERALD_BULK_YIELD")
    get_settings.cache_clear()
    urgency.marks.cache_clear()


def message(token: str, delivery_id: int, severity: str) -> Message:
    return Message(Target(delivery_id, delivery_id, token, "token", "com.example.admin", "production", 1),
                   Payload("[prod] order", "PO-1", "herald://events/1", {"event_id": "e1"}), severity, "orders",
                   3600)


def test_a_pages_deliver_batches_mark_while_they_run_and_the_mark_lapses_after(marks: urgency.Marks) -> None:
    # given nothing in flight
    assert not marks.busy()
    # when a stage other than a deliver batch runs for a page, nothing holds yet
    assert run_probe(URGENT_QUEUE, other_stage) is False
    # when a deliver batch runs from the urgent queue, a bulk sender sees a page in flight
    assert run_probe(URGENT_QUEUE) is True
    # then, once the task has ended, its mark lapses after the short grace that bridges a page's stages
    wait_until(lambda: not marks.busy(), timeout_s=5, interval_s=0.02, message="the mark to lapse")
    assert run_probe("resolve") is False
    # and another process (another client on the same Redis) sees the same marks
    other = urgency.Marks(get_settings().broker_url or "", get_settings().broker_key_prefix)
    marks.started("page-stage")
    assert other.busy()
    marks.finished("page-stage")
    wait_until(lambda: not other.busy(), timeout_s=5, interval_s=0.02, message="the mark to lapse")


def test_a_fan_out_chunk_holds_at_most_its_budget(marks: urgency.Marks) -> None:
    # nothing in flight: no hold at all
    assert urgency.hold(budget_s=1.0) == 0.0
    # a page in flight that never ends (its process killed before it could shorten its mark): held, but bounded
    marks.started("killed-page-stage")
    started = time.monotonic()
    held = urgency.hold(budget_s=0.3)
    assert held >= 0.3 and time.monotonic() - started >= 0.3


def test_off_by_default_or_without_redis_nothing_yields(clean: None, monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ({}, {"HERALD_BULK_YIELD": "false"},
                {"HERALD_BULK_YIELD": "true", "HERALD_BROKER_URL": "sqla+sqlite:////tmp/none.sqlite"}):
        with monkeypatch.context() as m:
            m.delenv("HERALD_BULK_YIELD", raising=False)
            for name, value in env.items():
                m.setenv(name, value)
            get_settings.cache_clear()
            urgency.marks.cache_clear()
            assert urgency.marks() is None and urgency.hold() == 0.0
    get_settings.cache_clear()
    urgency.marks.cache_clear()


@pytest.fixture
def fcm(fakes: FakeProviders, marks: urgency.Marks) -> Iterator[FcmChannel]:
    fresh_fakes(fakes)
    with herald_env(fakes.env()):
        channel = FcmChannel()
        yield channel
        channel.close()


def test_a_bulk_batch_holds_its_sends_while_a_page_is_in_flight_and_a_page_never_holds(
        fakes: FakeProviders, fcm: FcmChannel, marks: urgency.Marks) -> None:
    seen: Any = fakes.providers["fcm"].seen
    # given a page in flight (a stage of the urgent pool running)
    marks.started("page-stage")
    try:
        # when a page's batch is sent, it goes at once, past the mark
        [page] = fcm.send([message("page-tok", 1, "error")])
        after_page = len(list(seen))
        # and a bulk batch is sent meanwhile, it holds its whole budget, since the mark stands throughout
        started = time.monotonic()
        bulk = fcm.send([message(f"bulk-{i}", 10 + i, "info") for i in range(3)])
        held_s = time.monotonic() - started
    finally:
        marks.finished("page-stage")
    # then both were sent: the page first, the bulk batch after its hold (bounded: a burst is slowed, never stopped)
    assert page.outcome == "sent" and [r.outcome for r in bulk] == ["sent"] * 3
    assert after_page == 1 and [s["token"] for s in list(seen)][0] == "page-tok"
    assert held_s >= urgency.BUDGET_S
    # and once the page's mark has lapsed, a bulk batch holds nothing: it is sent before any budget could pass
    wait_until(lambda: not marks.busy(), timeout_s=5, interval_s=0.02, message="the mark to lapse")
    started = time.monotonic()
    assert [r.outcome for r in fcm.send([message("bulk-late", 20, "info")])] == ["sent"]
    assert time.monotonic() - started < urgency.BUDGET_S
