"""The ``herald`` command line: one Typer app assembled from the command modules of cli/.

Each group of commands lives in its own module (events, directory, deadletters, sweeps, credentials,
keys, people, channels, workers, demo); cli.output holds what they all print with and the exit codes: 0 success;
1 the work failed (for example the demo left targets pending); 2 bad input (an invalid event,
directory file, argument or setting), with a one-line reason; 3 a service herald needs (broker or database)
is unreachable.
"""

from __future__ import annotations

import logging
import sys

import typer

from cli import demo, events, sweeps, workers
from cli.api import api
from cli.audit import audit_app
from cli.channels import devices_app, fakes_app, vapid_app
from cli.credentials import credentials_app
from cli.deadletters import deadletters_app
from cli.directory import directory_app
from cli.incidents import incidents_app
from cli.keys import keys_app
from cli.metrics import metrics_app
from cli.output import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, err
from cli.people import people_app
from cli.webhooks import webhooks_app

app = typer.Typer(help="herald: push notifications for integration administration events.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="markdown",
                  pretty_exceptions_show_locals=False)

# Commands in the order `herald --help` lists them, then the command groups.
app.command("status")(sweeps.status)
app.command("demo")(demo.demo)
app.command("migrate")(workers.migrate)
app.command("worker")(workers.worker)
app.command("beat")(workers.beat)
app.command("flower")(workers.flower)
app.command("api")(api)
app.command("publish")(events.publish)
app.add_typer(events.events_app, name="events")
app.add_typer(directory_app, name="directory")
app.add_typer(incidents_app, name="incidents")
app.add_typer(deadletters_app, name="deadletters")
app.add_typer(sweeps.sweep_app, name="sweep")
app.add_typer(credentials_app, name="credentials")
app.add_typer(keys_app, name="keys")
app.add_typer(people_app, name="people")
app.add_typer(audit_app, name="audit")
app.add_typer(devices_app, name="devices")
app.add_typer(vapid_app, name="vapid")
app.add_typer(fakes_app, name="fakes")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(metrics_app, name="metrics")


def settings_problems(exc: Exception) -> list[str]:
    """What is wrong with herald's settings, one line per environment variable; empty when ``exc`` is about
    something else. The values are never shown: a setting may hold a secret (``HERALD_ACTION_KEYS``)."""
    import pydantic
    from pydantic_settings import BaseSettings

    if not isinstance(exc, pydantic.ValidationError):
        return []
    classes, seen = [BaseSettings], {}
    while classes:  # every settings class loaded: herald's own and each channel's (HERALD_<CHANNEL>_*)
        for sub in classes.pop().__subclasses__():
            seen[sub.__name__] = sub
            classes.append(sub)
    settings = seen.get(exc.title)
    if settings is None:
        return []
    prefix = str(settings.model_config.get("env_prefix", ""))
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        name = f"{prefix}{loc[0]}".upper() if loc else f"the {prefix}* settings together"
        where = f" (at {'.'.join(loc[1:])})" if len(loc) > 1 else ""
        problems.append(f"invalid setting {name}{where}: {error['msg']}")
    return problems


def main() -> None:
    import sqlalchemy.exc

    from herald import logs

    try:
        logs.configure(logging.WARNING)  # text, or JSON lines with HERALD_LOG_FORMAT=json; reads the settings
        app()
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        if "no such table" in reason or "does not exist" in reason and "relation" in reason:
            reason = f"the database has no herald schema yet ({reason}): run `herald migrate`"
        else:
            reason = f"database unreachable: {reason}"
        err.print(f"herald: {reason}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_UNAVAILABLE)
    except ValueError as exc:  # pydantic's ValidationError is one
        if not (problems := settings_problems(exc)):
            raise
        for problem in problems:
            err.print(f"herald: {problem}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
