"""``herald people link``: a one-time sign-in link, for installations without an identity provider."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.output import EXIT_BAD_INPUT, Json, fail, out, print_json

people_app = typer.Typer(help="People's sign-in: one-time links.", no_args_is_help=True)


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
