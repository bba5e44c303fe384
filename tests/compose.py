"""The compose files as Docker Compose reads them, for the tests that check them (no Docker engine here).

YAML first (anchors and ``<<`` merge keys: PyYAML resolves both as Compose does), then Compose's interpolation of
every string: ``$$`` is a literal ``$``, ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` (an unset
required variable is an error, as ``docker compose config`` says it).
https://docs.docker.com/reference/compose-file/interpolation/
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = ("docker-compose.yml", "docker-compose.rabbitmq.yml")
IMAGE = "herald:latest"

# What an operator exports before `docker compose up` (the files' header comments say so).
OPERATOR_ENV = {"FLOWER_BASIC_AUTH": "ops:" + "f" * 32, "HERALD_ACTION_KEYS": "k1:" + "a" * 64,
                "RABBITMQ_PASSWORD": "r" * 32}

_VARIABLE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}|(?P<bare>\w+))")


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is not set: Compose refuses to start."""


def interpolate(value: str, env: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("name") or match.group("bare")
        if env.get(name):
            return env[name]
        if match.group("op") == ":?":
            raise MissingVariable(f"{name}: {match.group('arg')}")
        return match.group("arg") or ""

    return _VARIABLE.sub(substitute, value)


def _walk(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def raw(name: str) -> dict[str, Any]:
    """The file as YAML, before interpolation."""
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def render(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as Compose runs it with the operator's variables ``env`` (default: :data:`OPERATOR_ENV`)."""
    rendered: dict[str, Any] = _walk(raw(name), OPERATOR_ENV if env is None else env)
    return rendered


def herald_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run herald's image."""
    return {name: svc for name, svc in compose["services"].items() if svc.get("image") == IMAGE}


def worker_pools(compose: dict[str, Any]) -> dict[str, str]:
    """Service name -> the pool its ``herald worker --pool`` runs."""
    return {name: svc["command"][svc["command"].index("--pool") + 1]
            for name, svc in herald_services(compose).items() if svc["command"][0] == "worker"}


def option(command: list[str], name: str) -> str:
    """The value that follows ``name`` in a command."""
    return command[command.index(name) + 1]


def shell_words(test: list[str]) -> list[str]:
    """A healthcheck's command as words: ``CMD`` gives them, ``CMD-SHELL`` one line for /bin/sh."""
    kind, *rest = test
    return rest if kind == "CMD" else rest[0].split()
