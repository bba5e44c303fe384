"""Pages have a lane of their own: no bulk work in any pool can hold them (herald/lanes.py).

Issue 11, item 1: a page published 2 s into a 30,000-device business fan-out waited 18.5 s, sent with the tail
of the burst. Now every stage of a page (severity critical or error) runs on the ``urgent`` queue, which the
``urgent`` pool alone consumes. How long a page waits during a real burst is measured by bench/ (pages.py).
"""

from __future__ import annotations

import yaml
from sqlalchemy import select

from herald import db, directory
from herald.models import Delivery, EventRow, Notification
from producers import business_event, flow_failed, publish
from schedules.queues import queue_stats
from tests.integration.conftest import DATA_DIR, Workers, wait_until
from tests.integration.helpers import rows

ON_CALL = ("pat", "kim")
CUSTOMERS = tuple(f"customer-{i}" for i in range(20))


def load_directory() -> None:
    """Two people on call for failures, and twenty customers subscribed to orders; one device each."""
    people = [{"id": p, "name": p, "devices": [{"channel": "fcm", "token": f"fcm-{p}"}]} for p in ON_CALL]
    people += [{"id": c, "name": c, "devices": [{"channel": "fcm", "token": f"fcm-{c}"}],
                "subscriptions": ["orders"]} for c in CUSTOMERS]
    spec = {"people": people,
            "teams": [{"id": "support", "name": "Support", "members": list(ON_CALL)}],
            "routes": [{"id": "failures", "match": {"types": ["flow.*"]}, "recipients": [{"team": "support"}]},
                       {"id": "orders", "match": {"types": ["business.*"]}, "recipients": [{"subscribers": True}]}]}
    path = DATA_DIR / "urgent-lane-directory.yaml"
    path.write_text(yaml.safe_dump(spec))
    with db.session() as s:
        directory.apply(directory.load(path), s)


def sent_to(event_id: object) -> dict[str, str]:
    found = rows(select(Notification.person_id, Delivery.status)
                 .join(Delivery, Delivery.notification_id == Notification.id)
                 .where(Notification.event_id == event_id))
    return dict(found)  # type: ignore[arg-type]


def test_a_page_goes_through_every_stage_while_bulk_work_waits_on_its_own_queues(workers: Workers) -> None:
    # given bulk work waiting in ingest: order events, and a failure that is only a warning
    load_directory()
    orders = [publish(business_event("order_submitted", topic="orders", reference=f"PO-{i}", environment="prod",
                                     summary="an order")) for i in range(5)]
    notice = publish(flow_failed("billing-sync", environment="prod", severity="warning"))
    # when only the urgent pool runs: no ingest, enrich, resolve, deliver or retry pool
    workers.start("urgent")
    page = publish(flow_failed("payments-export", environment="prod", error="500 from the ledger"))
    loud_order = publish(business_event("order_submitted", topic="orders", reference="PO-hot", environment="prod",
                                        summary="an order marked critical", severity="critical"))
    # then the page is stored, resolved and sent to both people on call, and the critical order to its subscribers
    wait_until(lambda: sent_to(page) == dict.fromkeys(ON_CALL, "sent"), timeout_s=60,
               message="the page sent to the people on call")
    wait_until(lambda: sent_to(loud_order) == dict.fromkeys(CUSTOMERS, "sent"), timeout_s=60,
               message="the critical order sent to its subscribers")
    # and the bulk work it went around is untouched, still on the ingest queue
    with db.session() as s:
        stored = set(s.scalars(select(EventRow.id)))
    assert not stored & {*orders, notice}
    assert queue_stats(["ingest"])[0].waiting == len(orders) + 1
    assert queue_stats(["urgent"])[0].waiting == 0


def test_bulk_pools_never_take_a_page(workers: Workers) -> None:
    # given every pool but the urgent one
    load_directory()
    workers.start("ingest,enrich,resolve,deliver.fcm,deliver.apns,deliver.webpush,retry")
    order = publish(business_event("order_submitted", topic="orders", reference="PO-1", environment="prod",
                                   summary="an order"))
    wait_until(lambda: sent_to(order) == dict.fromkeys(CUSTOMERS, "sent"), timeout_s=60,
               message="the order sent to its subscribers")
    # when a page is published, then another order
    page = publish(flow_failed("payments-export", environment="prod"))
    later = publish(business_event("order_submitted", topic="orders", reference="PO-2", environment="prod",
                                   summary="a later order"))
    # then the later order goes out, and the page waits for its own pool: no bulk pool took it
    wait_until(lambda: sent_to(later) == dict.fromkeys(CUSTOMERS, "sent"), timeout_s=60,
               message="the later order sent to its subscribers")
    with db.session() as s:
        assert s.get(EventRow, page) is None
    assert queue_stats(["urgent"])[0].waiting == 1
    # and once the urgent pool runs, it goes out
    workers.start("urgent")
    wait_until(lambda: sent_to(page) == dict.fromkeys(ON_CALL, "sent"), timeout_s=60,
               message="the page sent once the urgent pool runs")
