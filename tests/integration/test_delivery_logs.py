"""The deliver worker's log names the delivery ids of the targets it did not send (workers/deliver/delivery.py
``_log_unsent``): the ids ``herald deadletters list`` and the database show, so an operator can grep for one."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from devtools.fakes import FakeProviders
from herald import db
from herald.models import Delivery, utcnow
from tests.integration.helpers import rows
from tests.integration.test_uncertain_sends import fake, one_target  # noqa: F401 - the fixture
from workers.deliver import delivery
from workers.deliver.delivery import deliver_batch

LOGGER = "workers.deliver.delivery"


def the_target(batch_id: uuid.UUID) -> int:
    [(delivery_id,)] = rows(select(Delivery.id).where(Delivery.batch_id == batch_id))
    return int(delivery_id)


def run_batch(batch_id: uuid.UUID, caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """Run the batch as its deliver task would; the one line it logged about its unsent targets."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    deliver_batch("fcm", str(batch_id), None)
    [line] = [r for r in caplog.records if r.name == LOGGER and "target(s)" in r.getMessage()]
    return line


def test_a_target_the_provider_refused_for_good_is_logged_with_its_delivery_id(
        fake: FakeProviders, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    # given one FCM target whose token the provider no longer knows
    batch_id = one_target(fake, "fcm")
    fake.providers["fcm"].switches.dead_tokens.add("fcm-ana")
    # when its batch runs
    line = run_batch(batch_id, caplog)
    # then one info line says it failed, why, and which delivery it was
    target = the_target(batch_id)
    assert line.levelno == logging.INFO and line.delivery_id == target  # type: ignore[attr-defined]
    assert line.getMessage().startswith("1 target(s) failed: ")
    assert line.getMessage().endswith(f"(delivery {target})")


def test_a_retried_target_is_logged_as_such(fake: FakeProviders, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    batch_id = one_target(fake, "fcm")
    fake.providers["fcm"].switches.error_rate = 1.0  # every request answered "unavailable"
    line = run_batch(batch_id, caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage().startswith("1 target(s) to be retried: ")
    assert line.getMessage().endswith(f"(delivery {the_target(batch_id)})")


@pytest.mark.expect_dead_letters("delivery deadline passed")
def test_a_dead_target_is_a_warning(fake: FakeProviders, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    # given a target whose delivery deadline has passed, on a provider that is down
    batch_id = one_target(fake, "fcm")
    with db.session() as s:
        s.execute(update(Delivery).values(deliver_by=utcnow() - timedelta(seconds=1)))
    fake.providers["fcm"].switches.error_rate = 1.0
    line = run_batch(batch_id, caplog)
    # then the line is a warning: a dead letter holds the target
    assert line.levelno == logging.WARNING
    assert line.getMessage().startswith("1 target(s) dead: delivery deadline passed")
    assert line.getMessage().endswith(f"(delivery {the_target(batch_id)})")


def test_a_long_list_of_ids_is_cut_and_counted() -> None:
    # a batch of thousands dead in one outage is one line, not a page of ids
    assert delivery.named([7]) == "7"
    assert delivery.named(list(range(1, delivery.LOGGED_IDS + 1))).endswith(f", {delivery.LOGGED_IDS}")
    assert delivery.named(list(range(1, 501))) == ", ".join(map(str, range(1, 21))) + " and 480 more"
