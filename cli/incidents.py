"""``herald incidents list|show``: incidents, their escalation chain, who was paged when and who answered."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, Json, fail, out, print_json

incidents_app = typer.Typer(help="Incidents: their escalation chain, pages and answers.", no_args_is_help=True)

STATUSES = ("open", "acknowledged", "resolved")


@incidents_app.command("list")
def incidents_list(
    status: Annotated[str | None, typer.Option("--status", help="Only this status: open, acknowledged or "
                                                                "resolved.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many, newest first.")] = 100,
    as_json: Json = False,
) -> None:
    """List incidents, newest first, with their chain's next step.

    Examples:

        herald incidents list --status open

        herald incidents list --json
    """
    from sqlalchemy import select

    from herald import db, escalation
    from herald.models import Incident

    if status is not None and status not in STATUSES:
        fail(EXIT_BAD_INPUT, f"unknown status {status!r} (known: {', '.join(STATUSES)})")
    with db.session() as s:
        query = select(Incident).order_by(Incident.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Incident.status == status)
        rows: list[dict[str, Any]] = []
        for incident in s.scalars(query):
            chain = escalation.chain_view(incident)
            rows.append({"id": incident.id, "status": incident.status, "severity": incident.severity,
                         "environment": incident.environment, "title": incident.title,
                         "assignee": incident.assignee, "opened_at": incident.opened_at.isoformat(),
                         "policy": chain["policy"] if chain else None,
                         "chain": chain["state"] if chain else None,
                         "next_step": chain["next"] if chain else None,
                         "escalation_level": incident.escalation_level})
    if as_json:
        print_json(rows)
        return
    table = Table("id", "status", "severity", "env", "title", "assignee", "policy", "next step")
    for r in rows:
        nxt = r["next_step"]
        table.add_row(str(r["id"]), r["status"], r["severity"], r["environment"], r["title"], r["assignee"] or "-",
                      r["policy"] or "-",
                      f"{nxt['label']} at {str(nxt['due_at'])[:19]}" if nxt else (r["chain"] or "-"))
    out.print(table)


@incidents_app.command("show")
def incidents_show(
    incident_id: Annotated[int, typer.Argument(help="The incident's id.")],
    as_json: Json = False,
) -> None:
    """Show one incident: its escalation chain and current step, who was paged when (and what became of
    each page), and who answered.

    Example:

        herald incidents show 12 --json
    """
    from sqlalchemy import select

    from herald import db, escalation
    from herald.models import Answer, Incident

    with db.session() as s:
        incident = s.get(Incident, incident_id) if 0 < incident_id < 2**63 else None
        if incident is None:
            fail(EXIT_BAD_INPUT, f"no incident with id {incident_id}")
        pages = [{"step": p.step, "round": p.round, "person": p.person_id, "paged_at": p.paged_at.isoformat(),
                  "outcome": p.outcome, "outcome_at": p.outcome_at.isoformat() if p.outcome_at else None,
                  "event_id": str(p.event_id) if p.event_id else None}
                 for p in escalation.pages_of(s, incident.id)]
        answers = [{"at": a.at.isoformat(), "person": a.person_id, "action": a.action, "via": a.via,
                    "outcome": a.outcome, "reason": a.reason, "comment": a.comment}
                   for a in s.scalars(select(Answer).where(Answer.subject_type == "incident",
                                                           Answer.subject_id == incident.id).order_by(Answer.id))]
        view: dict[str, Any] = {
            "id": incident.id, "status": incident.status, "severity": incident.severity,
            "environment": incident.environment, "title": incident.title, "dedup_key": incident.dedup_key,
            "assignee": incident.assignee, "opened_at": incident.opened_at.isoformat(),
            "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
            "event_count": incident.event_count, "escalation_level": incident.escalation_level,
            "chain": escalation.chain_view(incident), "pages": pages, "answers": answers}
    if as_json:
        print_json(view)
        return
    _print_show(view)


def _print_show(view: dict[str, Any]) -> None:
    out.print(f"incident {view['id']}: {view['title']}")
    out.print(f"  {view['status']}, {view['severity']}, {view['environment']}, assignee {view['assignee'] or '-'}, "
              f"opened {view['opened_at'][:19]}" + (f", closed {view['closed_at'][:19]}" if view["closed_at"] else ""))
    chain = view["chain"]
    if chain is None:
        out.print(f"  no escalation chain (its route names no policy): escalation level {view['escalation_level']}")
    else:
        out.print(f"  chain: policy {chain['policy']}, {chain['rounds']} round(s), "
                  f"snapshot {chain['snapshot_at'][:19]}, {chain['state']}")
        nxt = chain["next"]
        for step in chain["steps"]:
            here = nxt is not None and nxt["step"] == step["index"]
            out.print(f"  {'>' if here else ' '} {step['index'] + 1}. {step['step']}"
                      + (f"  (next: round {nxt['round'] + 1}, due {str(nxt['due_at'])[:19]})" if here and nxt else ""))
    if view["pages"]:
        table = Table("paged at", "step", "round", "person", "outcome", "outcome at", title="pages")
        for p in view["pages"]:
            table.add_row(p["paged_at"][:19], "assignee" if p["step"] < 0 else str(p["step"] + 1), str(p["round"] + 1),
                          p["person"], p["outcome"], (p["outcome_at"] or "-")[:19])
        out.print(table)
    else:
        out.print("  nobody paged by a chain")
    if view["answers"]:
        table = Table("at", "person", "action", "via", "outcome", title="answers")
        for a in view["answers"]:
            table.add_row(a["at"][:19], a["person"], a["action"], a["via"],
                          a["outcome"] + (f" ({a['reason']})" if a["reason"] else ""))
        out.print(table)
    else:
        out.print("  no answer yet")
