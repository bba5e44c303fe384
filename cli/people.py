"""``herald people link|show``: a one-time sign-in link (installations without an identity provider), and what
herald knows of a person: devices, recent notifications and their outcomes, answers given."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.output import EXIT_BAD_INPUT, Json, fail, out, print_json

people_app = typer.Typer(help="People: what herald knows of one, and sign-in links.", no_args_is_help=True)


@people_app.command("link")
def people_link(
    person: Annotated[str, typer.Argument(help="The person: directory id, email or alias (any case).")],
    as_json: Json = False,
) -> None:
    """Print a one-time sign-in link for a person; opened once, it yields a session (docs/access.md).

    The link opens the responder page at HERALD_PUBLIC_URL; it expires after HERALD_SIGNIN_LINK_TTL_S.
    Send it to the person over a channel you trust: whoever opens it first signs in as them.

    Example:

        herald people link chen@example.com
    """
    from datetime import timedelta

    from herald import db, signin
    from herald.models import utcnow
    from herald.settings import get_settings

    settings = get_settings()
    with db.session() as s:
        person_id = signin.resolve_identity(s, person)
        if person_id is None:
            fail(EXIT_BAD_INPUT, f"no single active person in the directory is {person!r}")
        now = utcnow()
        token = signin.create_link(s, person_id, now=now)
    expires_at = now + timedelta(seconds=settings.signin_link_ttl_s)
    link = f"{settings.public_url.rstrip('/')}/app/#signin={token}" if settings.public_url else token
    if as_json:
        print_json({"person": person_id, "link": link, "token": token, "expires_at": expires_at.isoformat()})
        return
    out.print(link)
    out.print(f"one-time sign-in link for {person_id}, valid until {expires_at:%Y-%m-%d %H:%M} UTC")


@people_app.command("show")
def people_show(
    person: Annotated[str, typer.Argument(help="The person: directory id, email or alias (any case).")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many recent notifications and answers.")] = 20,
    as_json: Json = False,
) -> None:
    """Show a person: their devices, their recent notifications with what became of each, the answers they gave.

    A person removed from the directory file is shown too (inactive): past notifications still name them.
    Exits 2 when no person is PERSON. Device tokens are shown by their first characters only.

    Examples:

        herald people show chen

        herald people show chen@example.com --limit 5 --json
    """
    from herald import db

    with db.session() as s:
        person_id = _find_person(s, person)
        if person_id is None:
            fail(EXIT_BAD_INPUT, f"no person in the directory is {person!r} (an id, email or alias)")
        found = person_view(s, person_id, limit=limit)
    if as_json:
        print_json(found)
    else:
        _print_person(found)


def _find_person(s: Any, name: str) -> str | None:
    """The person whose id is ``name`` exactly (active or not), else the one active person who goes by it."""
    from herald import signin
    from herald.models import Person

    if s.get(Person, name) is not None:
        return name
    return signin.resolve_identity(s, name)


TOKEN_SHOWN = 12  # characters of a device token shown: enough to tell devices apart, not to use one


def person_view(s: Any, person_id: str, *, limit: int) -> dict[str, Any]:
    """A person as ``people show`` prints it (and ``--json`` gives it)."""
    from sqlalchemy import select

    from herald.models import Answer, Device, Person, TeamMember

    p = s.get(Person, person_id)
    devices = s.scalars(select(Device).where(Device.person_id == person_id).order_by(Device.id))
    answers = s.scalars(select(Answer).where(Answer.person_id == person_id)
                        .order_by(Answer.at.desc(), Answer.id.desc()).limit(limit))
    return {
        "person": {"id": p.id, "name": p.name, "email": p.email, "aliases": list(p.aliases or []),
                   "active": p.active, "timezone": p.timezone, "quiet_hours": p.quiet_hours,
                   "opted_out_channels": list(p.opted_out_channels or []),
                   "teams": sorted(s.scalars(select(TeamMember.team_id).where(TeamMember.person_id == person_id)))},
        "devices": [{"id": d.id, "channel": d.channel, "app": d.app, "environment": d.environment,
                     "token": _token_hint(d.token), "active": d.active, "registered_at": d.registered_at,
                     "deactivated_at": d.deactivated_at, "deactivated_reason": d.deactivated_reason}
                    for d in devices],
        "notifications": _notifications(s, person_id, limit),
        "answers": [{"id": a.id, "at": a.at, "subject": f"{a.subject_type}:{a.subject_id}",
                     "environment": a.environment, "action": a.action, "via": a.via, "outcome": a.outcome,
                     "reason": a.reason, "on_behalf_of": a.on_behalf_of, "comment": a.comment} for a in answers],
    }


def _token_hint(token: str) -> str:
    return token if len(token) <= TOKEN_SHOWN else token[:TOKEN_SHOWN] + "…"


def _notifications(s: Any, person_id: str, limit: int) -> list[dict[str, Any]]:
    """The person's newest notifications, each with its event and every delivery's outcome."""
    from sqlalchemy import select

    from herald.models import Delivery, DeliveryAttempt, EventRow, Notification

    rows = s.execute(select(Notification, EventRow).join(EventRow, EventRow.id == Notification.event_id)
                     .where(Notification.person_id == person_id)
                     .order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)).all()
    deliveries: dict[int, list[dict[str, Any]]] = {}
    ids = [n.id for n, _ in rows]
    last: dict[int, DeliveryAttempt] = {}
    found = list(s.scalars(select(Delivery).where(Delivery.notification_id.in_(ids)).order_by(Delivery.id))) if ids \
        else []
    if found:
        for attempt in s.scalars(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_([d.id for d in found]))
                                 .order_by(DeliveryAttempt.id)):
            last[attempt.delivery_id] = attempt
    for d in found:
        answer = last.get(d.id)
        deliveries.setdefault(d.notification_id, []).append(
            {"id": d.id, "channel": d.channel, "device_id": d.device_id, "status": d.status,
             "attempts": d.attempts, "sent_at": d.sent_at,
             "last_outcome": answer.outcome if answer else None,
             "reason": (answer.reason if answer else None) or d.last_error})
    return [{"id": n.id, "at": n.created_at, "event_id": str(e.id), "event_type": e.type,
             "environment": e.environment, "severity": e.severity, "incident_id": e.incident_id,
             "route": n.route, "why": n.reason, "status": n.status, "status_reason": n.status_reason,
             "deliveries": deliveries.get(n.id, [])} for n, e in rows]


def _print_person(found: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    p = found["person"]
    out.print(Text.assemble((p["id"], "bold"), f"  {p['name']}  {p['email'] or '-'}"
                            f"{'' if p['active'] else '  (inactive: removed from the directory)'}"))
    out.print(f"  aliases={', '.join(p['aliases']) or '-'}  teams={', '.join(p['teams']) or '-'}  "
              f"timezone={p['timezone']}  quiet_hours={'-'.join(p['quiet_hours'] or []) or '-'}  "
              f"opted_out={', '.join(p['opted_out_channels']) or '-'}")
    devices = Table("device", "channel", "app", "environment", "token", "state", title="devices", title_justify="left")
    for d in found["devices"]:
        state = "active" if d["active"] else f"inactive ({d['deactivated_reason'] or '-'})"
        devices.add_row(str(d["id"]), d["channel"], d["app"], d["environment"], d["token"], state)
    out.print(devices if found["devices"] else "devices: none")
    notes = Table("notification", "when", "event", "why", "status", "deliveries", title="recent notifications",
                  title_justify="left")
    for n in found["notifications"]:
        outcome = "; ".join(f"{d['channel']}#{d['device_id']} {d['status']}"
                            f"{' (' + d['reason'] + ')' if d['reason'] and d['status'] != 'sent' else ''}"
                            for d in n["deliveries"]) or "-"
        status = n["status"] + (f" ({n['status_reason']})" if n["status_reason"] else "")
        notes.add_row(str(n["id"]), f"{n['at']:%Y-%m-%d %H:%M:%S}", f"{n['event_type']} {n['event_id']}",
                      n["why"], status, outcome)
    out.print(notes if found["notifications"] else "recent notifications: none")
    answers = Table("answer", "when", "subject", "action", "via", "outcome", title="answers given",
                    title_justify="left")
    for a in found["answers"]:
        outcome = a["outcome"] + (f" ({a['reason']})" if a["reason"] else "")
        answers.add_row(str(a["id"]), f"{a['at']:%Y-%m-%d %H:%M:%S}", a["subject"], a["action"], a["via"], outcome)
    out.print(answers if found["answers"] else "answers given: none")
