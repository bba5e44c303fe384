"""Nobody reached (issue 11, items 4 and 5): a page whose every device failed, or whose person has none, is
recorded as unreached, e-mailed instead, moves the escalation chain on at once, and raises an operations event.

The end-to-end tests run real workers against the provider fakes (FCM, and the SMTP fake for e-mail); the others
call the stages in this process, as the workers would.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from devtools.fakes import FakeProviders
from devtools.fakes.testing import herald_env
from herald import db, directory, unreached
from herald.actions import verify
from herald.models import (
    Delivery,
    DeliveryAttempt,
    Device,
    EventRow,
    Incident,
    IncidentPage,
    Notification,
    Outbox,
    utcnow,
)
from producers import flow_failed, publish
from tests.integration.conftest import Workers, fresh_fakes, wait_until
from tests.integration.helpers import rows
from workers.deliver.delivery import deliver_batch
from workers.resolve import notify

PUBLIC_URL = "https://herald.example.com"


@pytest.fixture
def fake(fakes: FakeProviders, clean: None) -> Iterator[FakeProviders]:
    fresh_fakes(fakes)
    with herald_env({**fakes.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}):
        yield fakes


def load(spec: dict[str, Any]) -> None:
    with db.session() as s:
        directory.apply(directory.DirectorySpec.model_validate(spec), s)


def people() -> list[dict[str, Any]]:
    """olga watches (a live phone); ana's only phone is dead; bob's phone works; carl has no device at all."""
    return [
        {"id": "olga", "name": "Olga", "devices": [{"channel": "fcm", "token": "fcm-olga"}]},
        {"id": "ana", "name": "Ana", "email": "ana@example.com", "devices": [{"channel": "fcm", "token": "fcm-ana"}]},
        {"id": "bob", "name": "Bob", "email": "bob@example.com", "devices": [{"channel": "fcm", "token": "fcm-bob"}]},
        {"id": "carl", "name": "Carl", "email": "carl@example.com"},
    ]


def chain_directory(first: str) -> dict[str, Any]:
    """Flow failures tell olga; their incidents page ``first``, then (30 minutes later) bob."""
    return {"people": people(),
            "policies": [{"id": "orders", "steps": [{"notify": {"people": [first]}}, {"wait_min": 30},
                                                    {"notify": {"people": ["bob"]}}]}],
            "routes": [{"id": "failures", "match": {"types": ["flow.*"]}, "recipients": [{"person": "olga"}],
                        "escalation": "orders"}]}


def emails(fake: FakeProviders, to: str) -> list[dict[str, Any]]:
    return [seen for seen in fake.providers["email"].seen if seen["to"] == [to]]


def ops_events() -> list[Any]:
    return rows(select(EventRow.type, EventRow.source, EventRow.data).where(EventRow.type == "ops.page_unreached"))


def page_rows() -> list[Any]:
    return rows(select(IncidentPage.step, IncidentPage.person_id, IncidentPage.outcome).order_by(IncidentPage.id))


def unreached_notifications() -> list[Any]:
    return rows(select(Notification.person_id, Notification.unreached_at.is_not(None))
                .where(Notification.unreached_at.is_not(None)))


def test_a_person_whose_every_device_is_dead_is_unreached_emailed_and_the_next_step_is_paged_at_once(
        fake: FakeProviders, workers: Workers) -> None:
    # given an incident chain whose first step pages ana, whose only phone FCM no longer knows
    load(chain_directory("ana"))
    fake.providers["fcm"].switches.dead_tokens.add("fcm-ana")
    workers.start("all", env={**fake.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}, concurrency=4, kind="threads")
    # when a flow fails
    publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502 from the ERP"))
    # then ana is recorded as unreached, and the chain pages bob at once instead of in 30 minutes
    wait_until(lambda: ("ana", "unreached") in [(p, o) for _, p, o in page_rows()], message="ana unreached")
    wait_until(lambda: "bob" in [p for _, p, _ in page_rows()], timeout_s=30, message="bob paged")
    assert [(step, person) for step, person, _ in page_rows()] == [(0, "ana"), (2, "bob")]
    wait_until(lambda: any(s["token"] == "fcm-bob" and s["status"] == 200 for s in fake.providers["fcm"].seen),
               message="bob's phone got the page")
    # and ana got the page by e-mail, with one link per action to the responder page
    [mail] = wait_until(lambda: emails(fake, "ana@example.com"), message="ana's e-mail")
    [(notification_id,)] = rows(select(Notification.id).where(Notification.person_id == "ana"))
    links = [link for link in mail["links"] if "action=" in link]
    assert [link.split("action=")[1].split("&")[0] for link in links] == ["acknowledge", "resolve", "follow_up"]
    assert all(link.startswith(f"{PUBLIC_URL}/app/#n={notification_id}&action=") for link in links)
    claim = verify(links[0].split("token=")[1].replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))
    assert (claim.person_id, claim.notification_id, claim.action) == ("ana", notification_id, "acknowledge")
    # and the notification says unreached (then sent, by e-mail); her dead phone is deactivated
    assert unreached_notifications() == [("ana", True)]
    assert rows(select(Device.active).where(Device.token == "fcm-ana")) == [(False,)]
    wait_until(lambda: rows(select(Delivery.status).where(Delivery.channel == "email")) == [("sent",)],
               message="the e-mail recorded sent")
    # and operations heard about it, once, on the ops lane
    [(kind, source, data)] = wait_until(ops_events, message="ops.page_unreached ingested")
    assert (kind, source, data["resource"], data["notification_id"]) == (
        "ops.page_unreached", "herald/deliver", "ana", notification_id)
    # and bob, reached, is not unreached; nothing else was e-mailed
    assert [seen["to"] for seen in fake.providers["email"].seen] == [["ana@example.com"]]


def test_a_person_with_no_device_at_all_is_unreached_and_emailed(fake: FakeProviders, workers: Workers) -> None:
    # given a chain whose first step pages carl, who has an e-mail address and no device
    load(chain_directory("carl"))
    workers.start("all", env={**fake.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}, concurrency=4, kind="threads")
    # when a flow fails
    publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502 from the ERP"))
    # then carl is unreached at once (no_devices), e-mailed, and bob is paged without the 30 minutes' wait
    [mail] = wait_until(lambda: emails(fake, "carl@example.com"), message="carl's e-mail")
    assert mail["subject"].startswith("[prod]") and any("action=acknowledge" in link for link in mail["links"])
    wait_until(lambda: "bob" in [p for _, p, _ in page_rows()], timeout_s=30, message="bob paged")
    assert ("carl", "unreached") in [(p, o) for _, p, o in page_rows()]
    # and the e-mail is a device row of carl's, channel email, his address as its token
    assert rows(select(Device.person_id, Device.token, Device.active).where(Device.channel == "email")) == [
        ("carl", "carl@example.com", True)]
    wait_until(ops_events, message="ops.page_unreached ingested")


def test_an_smtp_server_that_refuses_is_retried_then_failed_and_nothing_is_recorded_twice(
        fake: FakeProviders, workers: Workers) -> None:
    # given carl (no device) paged for a flow failure, and a mail server that first defers, then refuses him
    load(chain_directory("carl"))
    fake.providers["email"].switches.errors["carl@example.com"] = "451*1"
    workers.start("all", env={**fake.env(), "HERALD_PUBLIC_URL": PUBLIC_URL}, concurrency=4, kind="threads")
    publish(flow_failed("orders-to-erp", environment="prod", error="HTTP 502 from the ERP"))
    # when the e-mail is deferred once: it is retried with backoff and goes out
    wait_until(lambda: rows(select(Delivery.status).where(Delivery.channel == "email")) == [("sent",)],
               message="the e-mail retried and sent")
    assert [o for (o,) in rows(select(DeliveryAttempt.outcome).join(Delivery).where(Delivery.channel == "email")
                               .order_by(DeliveryAttempt.id))] == ["transient", "sent"]
    # and one ops event only, one unreached notification only
    wait_until(ops_events, message="ops.page_unreached ingested")
    assert len(ops_events()) == 1 and len(unreached_notifications()) == 1


# --- in this process ---------------------------------------------------------------------------------------


def page_event(severity: str = "error", *, incident: bool = True) -> uuid.UUID:
    """An enriched flow failure (with its open incident) ready for resolve."""
    event_id = uuid.uuid4()
    with db.session() as s:
        incident_id = None
        if incident:
            row = Incident(dedup_key="flow:orders-to-erp:prod", environment="prod", title="orders-to-erp: flow.failed",
                           subject="orders-to-erp", severity=severity, status="open")
            s.add(row)
            s.flush()
            incident_id = row.id
        s.add(EventRow(id=event_id, type="flow.failed" if severity != "info" else "business.order_submitted",
                       flow="failure" if severity != "info" else "business", source="test", environment="prod",
                       severity=severity, idempotency_key=str(event_id), dedup_key="flow:orders-to-erp:prod",
                       occurred_at=utcnow(), data={"flow": "orders-to-erp", "error": "HTTP 502", "topic": "orders",
                                                   "reference": "PO-1"},
                       status="enriched", incident_id=incident_id))
    return event_id


def resolve_now(event_id: uuid.UUID) -> list[tuple[str, uuid.UUID]]:
    return [batch for chunk in notify(event_id, utcnow()) for batch in chunk]


def route_to(*people_ids: str, channels: list[str] | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"id": "pages", "match": {"types": ["flow.*", "business.*"]},
                             "recipients": [{"person": p} for p in people_ids]}
    if channels is not None:
        route["channels"] = channels
    return {"people": people(), "routes": [route]}


def email_batches() -> list[uuid.UUID]:
    return [b for (b,) in rows(select(Delivery.batch_id).where(Delivery.channel == "email"))]


def test_recording_twice_records_once(fake: FakeProviders) -> None:
    # given ana's page failed on her only phone
    load(route_to("ana"))
    fake.providers["fcm"].switches.dead_tokens.add("fcm-ana")
    event_id = page_event()
    [(channel, batch)] = resolve_now(event_id)
    deliver_batch(channel, str(batch), None)
    assert unreached_notifications() == [("ana", True)] and len(email_batches()) == 1
    # when the same failure is looked at again (a redelivered batch, a second worker)
    [(delivery_id,)] = rows(select(Delivery.id).where(Delivery.channel == "fcm"))
    with db.session() as s:
        assert unreached.after_deliveries(s, [delivery_id]) == 0
    # then nothing more is recorded: one e-mail, one ops event in the outbox
    assert len(email_batches()) == 1
    assert len([e for (e,) in rows(select(Outbox.envelope)) if e["type"] == "ops.page_unreached"]) == 1


def test_a_failed_notification_that_is_not_a_page_is_not_unreached(fake: FakeProviders) -> None:
    load(route_to("ana"))
    fake.providers["fcm"].switches.dead_tokens.add("fcm-ana")
    [(channel, batch)] = resolve_now(page_event("info", incident=False))
    deliver_batch(channel, str(batch), None)
    assert rows(select(Notification.status, Notification.unreached_at)) == [("failed", None)]
    assert email_batches() == []


def test_a_page_to_someone_without_a_device_is_unreached_at_resolve_and_emailed(fake: FakeProviders) -> None:
    load(route_to("carl"))
    assert resolve_now(page_event()) == []  # no push batch: carl has no device
    assert rows(select(Notification.status, Notification.status_reason)) == [("unreached", "unreached: no usable "
                                                                                            "device")]
    [batch] = email_batches()
    # its retries are bounded by the page's deadline, as any delivery's (herald/taskbase.py deliver_by)
    assert rows(select(Delivery.deliver_by.is_not(None)).where(Delivery.channel == "email")) == [(True,)]
    deliver_batch("email", str(batch), None)
    [mail] = emails(fake, "carl@example.com")
    assert any("action=acknowledge" in link for link in mail["links"])
    # and the page is listed as open until its incident is acknowledged
    with db.session() as s:
        [page] = unreached.open_pages(s)
        assert (page.person_id, page.emailed, page.severity) == ("carl", "sent", "error")
        incident = s.get_one(Incident, page.incident_id)
        incident.status = "acknowledged"
    with db.session() as s:
        assert unreached.open_pages(s) == []


def test_quiet_hours_hold_an_error_page_which_is_then_not_unreached(fake: FakeProviders) -> None:
    spec = route_to("carl")
    spec["people"][3]["quiet_hours"] = ["00:00", "23:59"]
    load(spec)
    resolve_now(page_event())
    assert rows(select(Notification.status)) == [("suppressed",)] and email_batches() == []


def test_a_route_that_names_email_sends_email_and_one_that_names_nothing_leaves_it_out(fake: FakeProviders) -> None:
    # given bob, with a phone and an address, and a route that asks for e-mail only
    load(route_to("bob", channels=["email"]))
    batches = resolve_now(page_event("info", incident=False))
    # then his address became an e-mail device and the event goes there
    assert [channel for channel, _ in batches] == ["email"]
    deliver_batch("email", str(batches[0][1]), None)
    assert len(emails(fake, "bob@example.com")) == 1
    # when a route names no channels, his phone gets the next event, not his e-mail (though its row exists)
    load(route_to("bob"))
    assert [channel for channel, _ in resolve_now(page_event("info", incident=False))] == ["fcm"]


def test_two_workers_ending_a_persons_last_two_targets_at_once_still_record_her_unreached(fake: FakeProviders) -> None:
    # given ana with two dead phones, one delivery batch each
    spec = route_to("ana")
    spec["people"][1]["devices"].append({"channel": "fcm", "token": "fcm-ana-tablet"})
    load(spec)
    fake.providers["fcm"].switches.dead_tokens.update({"fcm-ana", "fcm-ana-tablet"})
    with herald_env({"HERALD_BATCH_SIZE": "1"}):
        first, second = resolve_now(page_event())
    [(one,)] = rows(select(Delivery.id).where(Delivery.batch_id == first[1]))
    # when one worker ends the first target and, before it commits, another ends the second
    with db.session() as s:
        s.execute(update(Delivery).where(Delivery.id == one).values(status="failed"))
        assert unreached.after_deliveries(s, [one]) == 0  # the other target is still pending, as far as it sees
        other = threading.Thread(target=deliver_batch, args=("fcm", str(second[1]), None))
        other.start()
        wait_until(lambda: rows(select(func.count()).select_from(text("pg_stat_activity"))
                                .where(text("wait_event_type = 'Lock'")))[0][0] > 0, timeout_s=10,
                   message="the second worker waiting for the notification's lock")
    other.join(10)
    # then the second one, seeing both ended once the first committed, records ana unreached and e-mails her
    assert unreached_notifications() == [("ana", True)] and len(email_batches()) == 1


def test_an_email_the_server_refuses_is_failed_with_its_reason_and_nothing_more_is_raised(fake: FakeProviders) -> None:
    # given carl (no device) paged, and a mail server that refuses his address for policy reasons
    load(route_to("carl"))
    fake.providers["email"].switches.errors["carl@example.com"] = "554"
    resolve_now(page_event())
    # when the e-mail fallback is sent
    [batch] = email_batches()
    deliver_batch("email", str(batch), None)
    # then it is failed with the server's reply, his address kept, and the page stays unreached, once
    [(status, error)] = rows(select(Delivery.status, Delivery.last_error).where(Delivery.channel == "email"))
    assert status == "failed" and error.startswith("554 5.7.1 Transaction failed")
    assert rows(select(Device.active).where(Device.channel == "email")) == [(True,)]
    assert rows(select(Notification.status)) == [("unreached",)] and email_batches() == [batch]
    assert len([e for (e,) in rows(select(Outbox.envelope)) if e["type"] == "ops.page_unreached"]) == 1
