"""Drill: every provider host freezes (accepts requests, answers nothing for longer than herald waits), then is back."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import func, select

from herald import db
from herald.models import Delivery
from tests.integration.conftest import wait_until
from tests.integration.drills.conftest import Drill

pytestmark = pytest.mark.drill

HANG_S = 6.0  # longer than HERALD_CHANNEL_TIMEOUT_S (3 s in the drills): herald gives up, the provider still sends
FROZEN_S = 8.0


def _sent() -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "sent")) or 0)


def _hang(fakes: Any, hang_s: dict[str, float]) -> None:
    """How long each host of every provider holds a request before answering it (none: answer at once)."""
    for provider in fakes.providers.values():
        provider.switches.hang_s = dict(hang_s)


def test_provider_frozen_then_back_duplicates_only_as_recorded_resends(drill: Drill) -> None:
    # given a burst under way, part of it delivered
    burst = drill.burst(count=30, pace_s=0.05)
    wait_until(lambda: _sent() >= 24, timeout_s=30, message="deliveries under way")
    # when every host holds each request 6 s before answering it (herald's sends time out: outcome unknown)
    frozen = {"fcm": HANG_S, "apns": HANG_S, "apns_sandbox": HANG_S, "webpush": HANG_S}
    drill.fakes.call(lambda: _hang(drill.fakes, frozen))
    time.sleep(FROZEN_S)
    drill.fakes.call(lambda: _hang(drill.fakes, {}))
    accepted = burst.wait()
    # then every target is sent, and each copy the provider processed twice is a recorded resend
    drill.promise("providers frozen 8s", accepted, since=burst.started, timeout_s=150)
