"""``herald audit list``: the audit trail (who did what to which incident, approval, device or key), newest first."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, Json, fail, out, print_json

audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: datetime) -> datetime:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1w`` (or ``1d12h``) ago, or an ISO date or time (UTC unless it says)."""
    spec = text.strip().lower()
    if spec and _DURATION.sub("", spec).strip() == "":
        seconds = sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION.findall(spec))
        return now - timedelta(seconds=seconds)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--since {text!r}: give a duration (90s, 15m, 2h, 7d, 1w) or an ISO date or time "
                         "(2026-12-01, 2026-12-01T08:00:00+01:00)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse_subject(text: str) -> tuple[str, str]:
    """``KIND:ID`` (``incident:42``, ``approval:7``, ``device:3``, ``api_key:k_ab12``)."""
    kind, sep, subject_id = text.partition(":")
    if not sep or not kind.strip() or not subject_id.strip():
        raise ValueError(f"--subject {text!r}: give KIND:ID, for example incident:42")
    return kind.strip(), subject_id.strip()


@audit_app.command("list")
def audit_list(
    subject: Annotated[str | None, typer.Option(help="Only this subject, as KIND:ID (incident:42, approval:7, "
                                                     "device:3, api_key:ID).")] = None,
    since: Annotated[str | None, typer.Option(help="Only entries since: a duration ago (15m, 2h, 7d) or an ISO "
                                                   "date or time (UTC unless it says).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="How many, newest first.")] = 50,
    as_json: Json = False,
) -> None:
    """List audit entries, newest first: answers applied and refused, escalations, keys, devices.

    Exits 2 when --subject or --since cannot be read.

    Examples:

        herald audit list --subject incident:42

        herald audit list --since 2h --json

        herald audit list --since 2026-12-01 --limit 200
    """
    from herald.models import utcnow

    try:
        wanted = parse_subject(subject) if subject is not None else None
        after = parse_since(since, now=utcnow()) if since is not None else None
    except ValueError as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    rows = entries(subject=wanted, since=after, limit=limit)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no audit entries" + (f" for {subject}" if subject else "") + (f" since {since}" if since else ""))
        return
    import json

    table = Table("id", "when", "actor", "action", "subject", "details")
    for r in rows:
        table.add_row(str(r["id"]), f"{r['at']:%Y-%m-%d %H:%M:%S}", r["actor"], r["action"], r["subject"],
                      json.dumps(r["details"], default=str, ensure_ascii=False))
    out.print(table)


def entries(*, subject: tuple[str, str] | None, since: datetime | None, limit: int) -> list[dict[str, Any]]:
    """Audit rows as ``audit list`` gives them, newest first."""
    from sqlalchemy import select

    from herald import db
    from herald.models import AuditLog

    query = select(AuditLog).order_by(AuditLog.at.desc(), AuditLog.id.desc()).limit(limit)
    if subject is not None:
        query = query.where(AuditLog.subject_type == subject[0], AuditLog.subject_id == subject[1])
    if since is not None:
        query = query.where(AuditLog.at >= since)
    with db.session() as s:
        return [{"id": r.id, "at": r.at, "actor": r.actor, "action": r.action,
                 "subject": f"{r.subject_type}:{r.subject_id}", "details": r.details or {}}
                for r in s.scalars(query)]
