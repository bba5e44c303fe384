"""``herald demo``: the whole pipeline on a sample directory, through local fakes of the providers."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.output import EXIT_FAILED, err, out, print_json


def demo(
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the pipeline.")] = 180.0,
    dev_channel: Annotated[bool, typer.Option("--dev-channel", help="Write JSON lines (the development "
                                              "channel) instead of sending to the local fakes.")] = False,
) -> None:
    """Run the whole pipeline on a sample directory and a burst covering all seven flows.

    Uses the embedded default (SQLite state and broker in HERALD_DATA_DIR) unless
    HERALD_DATABASE_URL / HERALD_BROKER_URL point elsewhere. Messages go through the real FCM, APNs
    and Web Push code to local fakes of the providers, started for the demo; the answers' write-back
    goes to a local receiver that verifies each webhook's signature. Exits 1 if a target is still
    pending or a write-back did not arrive.

    Examples:

        herald demo

        herald demo --json | jq .pending

        herald demo --dev-channel      # JSON lines in HERALD_DATA_DIR/dev-channel.jsonl instead
    """
    from devtools import demo as demo_module

    progress = None if as_json else (lambda text: err.print(text, style="dim"))
    result = demo_module.run(timeout_s=timeout_s, progress=progress, dev_channel=dev_channel)
    if as_json:
        print_json({k: result[k] for k in ("flows", "pending", "failed", "deliberate_faults", "written_back",
                                           "webhooks")})
    else:
        _print_summary(result)
    if result["pending"] or result["webhooks"]["missing"]:
        raise typer.Exit(EXIT_FAILED)


def _print_summary(result: dict[str, Any]) -> None:
    """The demo's summary: per flow, the deliberate faults for what they are, and what the answers wrote back."""
    table = Table(title="herald demo: what happened per flow")
    for column in ("flow", "events", "notifications", "deliveries by status"):
        table.add_column(column)
    for flow, row in result["flows"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(row["deliveries"].items())) or "-"
        table.add_row(flow, str(row["events"]), str(row["notifications"]), statuses)
    out.print(table)
    out.print(f"pending targets: {result['pending']}")
    _print_failures(result)
    _print_received(result)
    for page in result.get("escalations", []):  # herald/escalation.py: the chain's steps that ran
        out.print(f"escalation: incident {page['incident']}, step {page['step']} paged {page['person']} "
                  f"({page['outcome']})")
    for page in result.get("email_fallback", []):  # herald/unreached.py: a page that reached no device
        out.print(f"unreached page: {page['event']} for {page['person']}, on no device: e-mail {page['email']}")
    _print_written_back(result["written_back"])
    _print_webhooks(result["webhooks"])
    out.print("trace one event: herald events list, then herald events show ID")
    page = result["responder"]
    out.print(f"the responder page, once `herald api` runs: {page['url']}; sign in as {page['person']} "
              f"(the link works once): {page['link']}", markup=False)


def _print_failures(result: dict[str, Any]) -> None:
    failed, faults = result["failed"], result["deliberate_faults"]
    if faults:
        out.print(f"failed deliveries: {failed['deliberate']} on purpose, {failed['unexpected']} unexpected. "
                  "The fakes were told to misbehave for these sample tokens, to show what herald does:")
        for f in faults:
            out.print(f"  {f['channel']} token {f['token']} ({f['person']}): {f['fault']}: {f['then']}")
    elif failed["unexpected"]:
        out.print(f"failed deliveries: {failed['unexpected']} (unexpected: see herald events show)")


def _print_received(result: dict[str, Any]) -> None:
    """What the fakes received, or where the development channel wrote."""
    if result["fakes"] is None:
        out.print(f"messages written by the development channel: {result['dev_output']}")
        return
    for name, seen in result["fakes"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(seen["by_status"].items())) or "-"
        extra = f", {seen['decrypted']} decrypted" if "decrypted" in seen else ""
        errors = any(not k.startswith("2") for k in seen["by_status"])
        note = " (the errors are the deliberate faults above)" if errors and result["deliberate_faults"] else ""
        out.print(f"fake {name} received {seen['requests']} requests ({statuses}{extra}){note}")
    out.print(f"what the fakes received: {result['fakes_seen']}")


def _print_written_back(back: dict[str, Any]) -> None:
    out.print("answers written back (flow 7):")
    for incident in back["incidents"]:
        holder = f", assignee {incident['assignee']}" if incident["assignee"] else ""
        stopped = ", escalation stopped" if incident["escalation_stopped"] and incident["status"] != "open" else ""
        out.print(f"  incident {incident['id']} {incident['title']}: {incident['status']}{holder}{stopped}")
    if back["approval"] is not None:
        a = back["approval"]
        votes = ", ".join(f"{v['person']} {v['decision']}" for v in a["votes"]) or "no vote"
        out.print(f"  approval {a['id']} {a['target']} (requested by {a['requester']}, quorum {a['quorum']}): "
                  f"{a['status']} ({votes})")
    for r in back["refused"]:
        out.print(f"  refused on purpose: {r['type']} from {r['responder']}: {r['reason']}")


def _print_webhooks(hooks: dict[str, Any]) -> None:
    kinds = ", ".join(f"{h['kind']} ({h['subject']})" for h in hooks["verified"]) or "none"
    out.print(f"signed webhooks the admin platform's receiver verified ({hooks['url']}): {kinds}",
              markup=False, highlight=False)
    if hooks["missing"]:
        out.print(f"  not received before the deadline: {', '.join(hooks['missing'])}", markup=False)
    if hooks["refused"]:
        out.print(f"  refused by the receiver (bad signature): {hooks['refused']}", markup=False)
