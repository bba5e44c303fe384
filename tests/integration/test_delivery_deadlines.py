"""Retries bounded by time, not count (issue 11, item 7).

Each target has a deadline (``deliveries.deliver_by``, written by resolve from
``HERALD_DELIVERY_DEADLINE_S`` by severity); a transient failure is retried with backoff until it,
time behind an open circuit spends no attempt, a half-open probe is not a target's attempt, and once
the host answers again everything still inside its deadline goes out without anyone replaying it.

The outage test runs a real worker process against the APNs fake (production refused, sandbox up).
The issue's outage lasted 60 s; CI runs a shorter one (``HERALD_TEST_OUTAGE_S``, default 15) with the
circuit's and the backoff's bounds scaled to it, which keeps what matters: the outage is longer than
the old attempt count survived (5 attempts, spent in about 10 s at this backoff), shorter than the
deadline, and the circuit opens and probes during it. ``HERALD_TEST_OUTAGE_S=60`` runs the issue's case.
The other tests deliver in this process, calling ``deliver_batch`` as the retry queue would.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import select, update

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, deadletters, devices
from herald.app import app
from herald.channels.sender import ProviderChannel
from herald.lanes import lane_of, queue_for
from herald.models import DeadLetter, Delivery, DeliveryAttempt, Device, EventRow, Notification, Person, Route, utcnow
from herald.taskbase import deliver_by
from tests.integration.conftest import Workers, fresh_fakes, wait_until
from tests.integration.helpers import rows
from workers.deliver.delivery import _next_run, channel_for, deliver_batch
from workers.resolve import notify

OUTAGE_S = float(os.environ.get("HERALD_TEST_OUTAGE_S", "15"))
MAX_OPEN_S = round(OUTAGE_S / 5, 1)  # the circuit probes a few times during the outage
# 3 production targets, each round of the page is 3 "down" answers: the circuit opens on the 6th round,
# after the 5 attempts the old count allowed (pages are small: they rarely open a circuit at once).
CIRCUIT_FAILURES = 18
OUTAGE_SETTINGS = {
    "HERALD_DELIVERY_DEADLINE_S": json.dumps({"critical": OUTAGE_S * 6}),
    "HERALD_CHANNEL_CIRCUIT_FAILURES": str(CIRCUIT_FAILURES),
    "HERALD_CHANNEL_CIRCUIT_OPEN_S": "1",
    "HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S": str(MAX_OPEN_S),
    "HERALD_CHANNEL_TIMEOUT_S": "1",
    "HERALD_RETRY_BASE_S": "0.5",
    "HERALD_RETRY_MAX_S": str(round(OUTAGE_S / 3, 1)),
}
IN_PROCESS = {"HERALD_CHANNEL_CIRCUIT_FAILURES": "2", "HERALD_CHANNEL_CIRCUIT_OPEN_S": "0.5",
              "HERALD_CHANNEL_CIRCUIT_MAX_OPEN_S": "1", "HERALD_CHANNEL_TIMEOUT_S": "1", "HERALD_RETRY_MAX_S": "1"}


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), **IN_PROCESS}):
        yield fakes
        for name in ("apns", "fcm"):
            if name in channel_for.built:
                cast(ProviderChannel, channel_for(name)).close()


def token(name: str) -> str:
    return name.encode().hex().ljust(64, "0")[:64]


def page(targets: list[tuple[str, str, str]], *, severity: str = "critical", until: datetime | None = None,
         legacy: frozenset[str] = frozenset(), dedup_key: str | None = None) -> uuid.UUID:
    """One event, one notification per person, one delivery per (person, channel, token) target, in one batch.

    APNs tokens go to production unless their name starts with ``sand``. Each target's deadline is
    ``until`` (default: the severity's, as resolve writes it); tokens in ``legacy`` have none (rows
    written before migration 0006).
    """
    batch_id, event_id, now = uuid.uuid4(), uuid.uuid4(), utcnow()
    with db.session() as s:
        s.add(EventRow(id=event_id, type="business.order_submitted", flow="business", source="test",
                       environment="prod", severity=severity, idempotency_key=str(event_id), dedup_key=dedup_key,
                       occurred_at=now, data={"topic": "orders.eu", "reference": "PO-1"}, status="resolved"))
        notifications: dict[str, int] = {}
        for person, channel, value in targets:
            if person not in notifications:
                s.merge(Person(id=person, name=person.title()))
                s.flush()
                notification = Notification(event_id=event_id, person_id=person, route="test", reason="test")
                s.add(notification)
                s.flush()
                notifications[person] = notification.id
            environment = "sandbox" if channel == "apns" and value.startswith(token("sand")[:8]) else "production"
            device = devices.register(s, person_id=person, channel=channel, token=value, app="com.example.admin",
                                      environment=environment, by="directory")
            s.add(Delivery(notification_id=notifications[person], event_id=event_id, device_id=device.id,
                           channel=channel, batch_id=batch_id,
                           deliver_by=None if value in legacy else until or deliver_by(severity, now)))
    return batch_id


def by_token() -> dict[str, Any]:
    return {r.token: r for r in rows(
        select(Device.token, Device.environment, Delivery.id, Delivery.status, Delivery.attempts,
               Delivery.last_error, Delivery.deliver_by).join(Delivery, Delivery.device_id == Device.id))}


def deliver_for(channel: str, batch_id: uuid.UUID, seconds: float, until: Any = None) -> None:
    """Run the batch as the retry queue would, for ``seconds`` or until ``until()`` holds."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        deliver_batch(channel, str(batch_id), None)
        if until is not None and until():
            return
        time.sleep(0.1)


def probes() -> list[Any]:
    return rows(select(DeliveryAttempt.delivery_id).where(DeliveryAttempt.reason.like("circuit probe%")))


def assert_probes_not_counted() -> None:
    """Each target's attempts are its attempt rows less its circuit probes."""
    probed, tried = probes(), rows(select(DeliveryAttempt.delivery_id))
    for delivery_id, attempts in rows(select(Delivery.id, Delivery.attempts)):
        assert attempts == sum(1 for t in tried if t.delivery_id == delivery_id) \
            - sum(1 for p in probed if p.delivery_id == delivery_id), delivery_id


PRODUCTION = [token(f"prod{i}") for i in range(3)]
SANDBOX = [token(f"sand{i}") for i in range(3)]


def test_production_down_with_sandbox_up_is_ridden_out_and_delivered_once_it_is_back(
        fakes: FakeProviders, workers: Workers) -> None:
    # given APNs production refusing connections, sandbox answering, and a worker for every pool
    fresh_fakes(fakes)
    switches = fakes.providers["apns"].switches
    switches.refused.add("apns")
    fakes.settle()
    with herald_env({**fakes.env(), **OUTAGE_SETTINGS}):
        batch_id = page([("ana", "apns", t) for t in PRODUCTION + SANDBOX])
    workers.start("all", concurrency=2, env={**fakes.env(), **OUTAGE_SETTINGS})
    # when a page to three production and three sandbox devices is sent
    task = "herald.deliver.apns"
    app.send_task(task, args=[str(batch_id)], queue=queue_for(task, lane_of("business.order_submitted", "test",
                                                                               "critical")))
    # then the sandbox targets are delivered during the outage
    wait_until(lambda: all(by_token()[t].status == "sent" for t in SANDBOX), timeout_s=30,
               message="the sandbox targets sent while production is down")
    down_at = time.monotonic()  # the outage as the page sees it: from its first round (the worker started)
    assert {by_token()[t].status for t in PRODUCTION} <= {"pending", "sending"}
    # and the production targets are still retried when the outage lasted past the old attempt count
    while time.monotonic() - down_at < OUTAGE_S:
        assert {by_token()[t].status for t in PRODUCTION} <= {"pending", "sending"}
        time.sleep(0.2)
    seen = by_token()
    assert min(seen[t].attempts for t in PRODUCTION) > 5  # the old HERALD_MAX_DELIVERY_ATTEMPTS
    assert probes(), "the circuit opened and probed during the outage"
    # when production is back, everything goes out without anyone replaying it, within a circuit period
    switches.refused.clear()
    fakes.settle()
    back_at = time.monotonic()
    wait_until(lambda: all(r.status == "sent" for r in by_token().values()), timeout_s=MAX_OPEN_S + 30,
               message="every target sent once production is back")
    assert time.monotonic() - back_at < MAX_OPEN_S + 10
    # and nothing was dead-lettered, and no probe counted as a target's attempt
    assert not rows(select(DeadLetter.id))
    assert_probes_not_counted()


@pytest.mark.parametrize(("channel", "host"), [("apns", "apns"), ("fcm", "fcm")])
def test_every_copy_sent_to_a_hung_provider_carries_the_collapse_id_of_the_first(
        fake: FakeProviders, channel: str, host: str) -> None:
    # given a page with no dedup key to four people, and a provider that accepts requests and answers too late
    targets = [(f"p{i}", channel, token(f"prod{i}") if channel == "apns" else f"fcm-p{i}") for i in range(4)]
    batch_id = page(targets, severity="error")
    provider = fake.providers[channel]
    provider.switches.hang_s[host] = 2.5
    # when it is retried through the hang and after it
    deliver_for(channel, batch_id, 5)
    provider.switches.hang_s.clear()
    deliver_for(channel, batch_id, 20, until=lambda: all(r.status == "sent" for r in by_token().values()))
    assert all(r.status == "sent" for r in by_token().values())
    wait_until(lambda: provider.in_flight == 0, timeout_s=10, message="the late answers")
    # then the provider got some targets more than once, and every copy of a target carries one collapse id
    copies: dict[str, list[Any]] = {}
    for entry in provider.seen:
        collapse = entry.get("collapse_id") if channel == "apns" else (entry.get("android") or {}).get("collapse_key")
        copies.setdefault(entry["token"], []).append(collapse)
    assert set(copies) == {t for _, _, t in targets}
    assert any(len(ids) > 1 for ids in copies.values()), copies
    for ids in copies.values():
        assert ids[0] and set(ids) == {ids[0]}, ids
    assert len({ids[0] for ids in copies.values()}) == len(copies)  # one per notification
    assert not rows(select(DeadLetter.id))


@pytest.mark.expect_dead_letters(r"^2 target\(s\): delivery deadline passed before they could be delivered")
def test_a_target_still_failing_at_its_deadline_is_dead_lettered_with_that_reason(fake: FakeProviders) -> None:
    # given production down, a page whose targets' deadline is 3 s away, and one target written before 0006
    legacy = token("prod9")
    batch_id = page([("ana", "apns", t) for t in [*PRODUCTION[:2], legacy]], until=utcnow() + timedelta(seconds=3),
                    legacy=frozenset({legacy}))
    fake.providers["apns"].switches.refused.add("apns")
    fake.settle()
    # when the batch is retried past the deadline (the circuit opens on the first round: the rest is deferred)
    deliver_for("apns", batch_id, 15, until=lambda: all(by_token()[t].status == "dead" for t in PRODUCTION[:2]))
    # then the two targets are dead with the deadline as their reason, in one replayable dead letter
    seen = by_token()
    for t in PRODUCTION[:2]:
        assert seen[t].status == "dead"
        assert seen[t].last_error.startswith("delivery deadline passed ("), seen[t].last_error
    [letter] = rows(select(DeadLetter.id, DeadLetter.reason, DeadLetter.ref))
    assert sorted(letter.ref["delivery_ids"]) == sorted(seen[t].id for t in PRODUCTION[:2])
    # and the target without a deadline keeps the attempt-count rule: still pending, attempts to spare
    assert seen[legacy].status == "pending" and seen[legacy].deliver_by is None
    # when production is back and the dead letter is replayed, the targets get a fresh deadline and go out
    fake.providers["apns"].switches.refused.clear()
    fake.settle()
    before = utcnow()
    assert deadletters.replay() == [letter.id]
    replayed = by_token()
    assert all(replayed[t].status == "pending" and replayed[t].deliver_by > before + timedelta(minutes=30)
               for t in PRODUCTION[:2])
    deliver_for("apns", batch_id, 20, until=lambda: all(r.status == "sent" for r in by_token().values()))
    assert {r.status for r in by_token().values()} == {"sent"}


def test_probes_behind_an_open_circuit_spend_no_attempt_of_a_target_with_a_deadline(fake: FakeProviders) -> None:
    # given production gone, and three production targets whose deadline is an hour away
    batch_id = page([("ana", "apns", t) for t in PRODUCTION])
    fake.providers["apns"].switches.refused.add("apns")
    fake.settle()
    # when the batch is retried through many half-open probes
    deliver_for("apns", batch_id, 8)
    assert len(probes()) >= 3
    # then the probes are recorded but not counted, nothing is dead, and the circuit kept the count low
    assert_probes_not_counted()
    assert {r.status for r in by_token().values()} == {"pending"}
    assert max(r.attempts for r in by_token().values()) <= 2  # the round that opened the circuit
    assert not rows(select(DeadLetter.id))
    # and once production is back, every target is delivered
    fake.providers["apns"].switches.refused.clear()
    fake.settle()
    deliver_for("apns", batch_id, 20, until=lambda: all(r.status == "sent" for r in by_token().values()))
    assert {r.status for r in by_token().values()} == {"sent"}


@pytest.mark.parametrize(("severity", "configured", "expected_s"), [
    ("critical", None, 3600), ("info", None, 86400), ("critical", {"critical": 120}, 120),
    ("warning", {"critical": 120}, 14400),  # a severity not named keeps its default
])
def test_resolve_writes_each_target_its_deadline_by_severity(
        clean: None, severity: str, configured: dict[str, float] | None, expected_s: float) -> None:
    event_id = uuid.uuid4()
    with db.session() as s:
        s.add(Person(id="ana", name="Ana"))
        s.flush()
        devices.register(s, person_id="ana", channel="fcm", token="fcm-ana", app="com.example.admin", by="directory")
        s.add(Route(id="all", position=0, match={}, recipients=[{"person": "ana"}], channels=None))
        s.add(EventRow(id=event_id, type="business.order_submitted", flow="business", source="test",
                       environment="prod", severity=severity, idempotency_key=str(event_id), dedup_key=None,
                       occurred_at=utcnow(), data={"topic": "orders.eu", "reference": "PO-1"}, status="resolving"))
    env = {"HERALD_DELIVERY_DEADLINE_S": json.dumps(configured)} if configured else {}
    with herald_env(env):
        now = utcnow()
        assert list(notify(event_id, now))
    [(written,)] = rows(select(Delivery.deliver_by))
    assert written == now + timedelta(seconds=expected_s)


def test_a_target_not_due_when_its_batch_ran_is_not_left_to_the_recovery_sweep(fake: FakeProviders) -> None:
    # given a batch of two targets, one due now and one due in 20 s (its backoff)
    batch_id = page([("ana", "fcm", "fcm-ana"), ("ben", "fcm", "fcm-ben")])
    with db.session() as s:
        s.execute(update(Delivery).where(Delivery.device_id.in_(select(Device.id).where(Device.token == "fcm-ben")))
                  .values(due_at=utcnow() + timedelta(seconds=20)))
    # when the batch runs and sends the first one
    assert deliver_batch("fcm", str(batch_id), None) == 1
    assert {t: r.status for t, r in by_token().items()} == {"fcm-ana": "sent", "fcm-ben": "pending"}
    # then its next task is due with the second target, not a stall deadline later
    next_run = _next_run(batch_id)
    assert next_run is not None and 15 < next_run <= 20
