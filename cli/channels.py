"""``herald devices``, ``herald vapid`` and ``herald fakes``: the channel commands.

Exit codes as for every herald command (cli.output): 0 success, 1 failed, 2 bad input, 3 a service is unreachable.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_UNAVAILABLE, Json, err, fail, out, print_json

devices_app = typer.Typer(help="Register, list and remove push devices.", no_args_is_help=True)
vapid_app = typer.Typer(help="Web Push VAPID keys.", no_args_is_help=True)
fakes_app = typer.Typer(help="Local, protocol-faithful fakes of FCM, APNs and Web Push.", no_args_is_help=True)

@devices_app.command("register")
def devices_register(
    person: Annotated[str, typer.Argument(help="Person id from the directory.")],
    channel: Annotated[str, typer.Argument(help="fcm, apns or webpush.")],
    token: Annotated[str, typer.Argument(help="FCM token or FID, APNs token (hex), or Web Push subscription JSON.")],
    kind: Annotated[str | None, typer.Option(help="token, fid or subscription (default from the channel).")] = None,
    app: Annotated[str, typer.Option(help="App id: the FCM credentials key; for APNs a bundle id or an app "
                                          "HERALD_APNS_TOPICS maps (required).")] = "default",
    environment: Annotated[str, typer.Option(help="APNs: sandbox or production.")] = "production",
) -> None:
    """Register or refresh a device; a token already known moves to PERSON (duplicates collapse).

    The device registers itself here, so a device a provider deactivated is active again. A refused
    token, app or subscription exits 2 with the reason.

    Examples:

        herald devices register alice fcm "dXN...:APA91b..." --app com.example.admin

        herald devices register bruno apns 8f1c...e2 --app com.example.admin --environment sandbox

        herald devices register alice webpush '{"endpoint": "https://...", "keys": {"p256dh": "B...", "auth": "..."}}'
    """
    from herald.errors import InvalidDevice
    from producers.devices import register_device

    try:
        device_id = register_device(person, channel, token, token_kind=kind, app=app, environment=environment)
    except InvalidDevice as exc:
        fail(EXIT_BAD_INPUT, str(exc))
    out.print(f"device {device_id}")


@devices_app.command("list")
def devices_list(
    person: Annotated[str | None, typer.Option(help="Only this person's devices.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    include_inactive: Annotated[bool, typer.Option("--all", help="Include deactivated devices.")] = False,
    as_json: Json = False,
) -> None:
    """List devices, with why a deactivated one was deactivated.

    Examples:

        herald devices list --person alice

        herald devices list --channel apns --all --json
    """
    from sqlalchemy import select

    from herald import db
    from herald.models import Device

    query = select(Device).order_by(Device.id)
    if person:
        query = query.where(Device.person_id == person)
    if channel:
        query = query.where(Device.channel == channel)
    if not include_inactive:
        query = query.where(Device.active.is_(True))
    with db.session() as s:
        rows: list[dict[str, Any]] = [
            {"id": d.id, "person": d.person_id, "channel": d.channel, "kind": d.token_kind, "app": d.app,
             "environment": d.environment, "active": d.active, "token": d.token,
             "registered_at": d.registered_at.isoformat(),
             "deactivated_reason": d.deactivated_reason} for d in s.scalars(query)]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "person", "channel", "app", "env", "active", "token", "why inactive")
    for r in rows:
        table.add_row(str(r["id"]), r["person"], r["channel"], r["app"], r["environment"], str(r["active"]),
                      r["token"][:32] + ("..." if len(r["token"]) > 32 else ""), r["deactivated_reason"] or "")
    out.print(table)


@devices_app.command("remove")
def devices_remove(
    device_ids: Annotated[list[int], typer.Argument(help="Device ids (herald devices list).")],
) -> None:
    """Deactivate devices (kept for the delivery history; registering the token again revives it).

    Example:

        herald devices remove 12 13
    """
    from sqlalchemy import update

    from herald import db
    from herald.models import Device, utcnow

    with db.session() as s:
        # RETURNING, never rowcount: some driver versions report -1 (see workers/ingest.py persist)
        done = len(s.scalars(update(Device).where(Device.id.in_(device_ids), Device.active.is_(True))
                             .values(active=False, deactivated_at=utcnow(), deactivated_reason="removed (CLI)")
                             .returning(Device.id)).all())
    out.print(f"removed {done} device(s)")
    if done < len(device_ids):
        fail(EXIT_FAILED, f"{len(device_ids) - done} id(s) unknown or already inactive")


@vapid_app.command("generate")
def vapid_generate(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the private key (PEM, mode 600).")]
    = Path("vapid-private.pem"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing key (every subscription breaks).")] = False,
) -> None:
    """Write a VAPID key pair and print the public key the browser subscribes with.

    Point HERALD_WEBPUSH_VAPID_KEY_FILE at the file; pass the printed key to
    `pushManager.subscribe({applicationServerKey: ...})`.

    Example:

        herald vapid generate --out /etc/herald/vapid-private.pem
    """
    from herald.channels import vapid

    if out_file.exists() and not force:
        fail(EXIT_BAD_INPUT, f"{out_file} exists: every browser subscription is bound to it (use --force to replace)")
    public = vapid.generate(out_file)
    err.print(f"private key written to {out_file}; set HERALD_WEBPUSH_VAPID_KEY_FILE={out_file}")
    sys.stdout.write(public + "\n")  # never wrapped: the browser needs it whole


@fakes_app.command("serve")
def fakes_serve(
    folder: Annotated[Path, typer.Option("--dir", help="Where to write the fakes' keys and fakes.env.")]
    = Path(".herald/fakes"),
    host: Annotated[str, typer.Option(help="Address to listen on (loopback only by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Base port: control, then fcm, apns, apns sandbox, webpush, smtp "
                                           "(0: any free ports).", envvar="HERALD_FAKES_PORT")] = 8800,
    latency_ms: Annotated[float, typer.Option(help="Latency added to every answer.")] = 0.0,
) -> None:
    """Run the FCM, APNs, Web Push and SMTP fakes until interrupted; print their URLs and herald's environment.

    Switches (latency, error rate, dead tokens, 429 + Retry-After, outage, and per host a hang or a
    refused connection) change at run time through the control URL, for example:

        herald fakes serve --latency-ms 50

        curl -XPOST localhost:8800/switches/fcm -d '{"dead_tokens": ["old"], "outage_s": 10}'

        curl -XPOST localhost:8800/switches/apns -d '{"refused": ["apns"], "hang_s": {"apns_sandbox": 30}}'

        set -a; . .herald/fakes/fakes.env; set +a    # then start herald workers
    """
    import asyncio

    from devtools.fakes.server import FakeProviders, serve_forever

    def announce(fakes: FakeProviders) -> None:
        env_file = fakes.write_env()
        for name, url in fakes.urls.items():
            out.print(f"{name:13} {url}", markup=False, highlight=False)
        out.print(f"environment  {env_file}", markup=False, highlight=False)

    try:
        asyncio.run(serve_forever(folder, host=host, port=port, latency_ms=latency_ms, announce=announce))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(EXIT_UNAVAILABLE, f"cannot listen: {exc}")
