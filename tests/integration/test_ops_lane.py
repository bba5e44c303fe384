"""herald's own operations alerts have a lane of their own: no pipeline pool can hold them.

Issue 8, item 7: an ``ops.*`` event raised by a sweep went ingest -> enrich -> resolve ->
deliver.<channel> like any other event, so with ingest dead the alert about it waited 10 minutes,
and under load it queued behind the backlog it reported. Now every stage of such an event runs on
the ``ops`` queue, which the sweeps pool consumes (herald/lanes.py).
"""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import func, select

from herald import db, directory
from herald.models import Delivery, EventRow, Notification
from producers import flow_failed, publish
from schedules.queues import queue_stats
from tests.integration.conftest import DATA_DIR, Workers, wait_until
from tests.integration.helpers import rows

MANAGERS = ("olga", "omar")


def load_operations_team() -> None:
    """Two operations managers with one device each, and the route that sends them ops.* events."""
    spec = {
        "people": [{"id": p, "name": p, "devices": [{"channel": "fcm", "token": f"fcm-{p}"}]} for p in MANAGERS],
        "teams": [{"id": "operations", "name": "Operations managers", "members": list(MANAGERS)}],
        "routes": [{"id": "operations", "match": {"types": ["ops.*"]}, "recipients": [{"team": "operations"}]}],
    }
    path = DATA_DIR / "ops-lane-directory.yaml"
    path.write_text(yaml.safe_dump(spec))
    with db.session() as s:
        directory.apply(directory.load(path), s)


def backlog_alert_deliveries() -> dict[str, Any]:
    """Delivery status per person for the ops.queue_backlog event raised about the ingest queue."""
    found = rows(select(Notification.person_id, Delivery.status)
                 .join(Delivery, Delivery.notification_id == Notification.id)
                 .join(EventRow, EventRow.id == Notification.event_id)
                 .where(EventRow.type == "ops.queue_backlog", EventRow.data["resource"].as_string() == "ingest"))
    return dict(found)  # type: ignore[arg-type]


def test_a_sweeps_alert_reaches_operations_with_ingest_enrich_resolve_and_deliver_all_down(
        workers: Workers) -> None:
    # given operations managers with devices, and 30 events waiting on ingest, whose pool is down
    load_operations_team()
    for i in range(30):  # warnings: bulk work (a page rides the urgent lane: test_urgent_lane.py)
        publish(flow_failed(f"flow-{i}", environment="prod", severity="warning"))
    # when only the sweeps pool runs (with beat): no ingest, enrich, resolve, deliver or retry pool
    env = {"HERALD_BACKLOG_INTERVAL_S": "1", "HERALD_BACKLOG_DEPTH_THRESHOLD": "20",
           "HERALD_BACKLOG_AGE_THRESHOLD_S": "3600"}
    workers.start("sweeps", env=env, beat=True)
    # then the backlog alert about ingest is stored, resolved and sent to both managers' devices
    wait_until(lambda: backlog_alert_deliveries() == dict.fromkeys(MANAGERS, "sent"), timeout_s=90,
               message="the backlog alert sent to the operations managers")
    # and it went around the held pipeline: the events it reports still wait on ingest, untouched
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(EventRow).where(EventRow.flow == "failure")) == 0
    assert queue_stats(["ingest"])[0].waiting >= 30
