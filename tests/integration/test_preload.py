"""A deliver worker imports its channels' provider libraries before it forks (herald/channels/spec.py ``preload``).

Found with bench/ (page-during-burst): the first Web Push page from each fresh process of the urgent pool took
~250 ms against ~110 ms for the next ones; importing the Web Push provider in a fresh worker took 140 ms.
Each case runs in a fresh interpreter: what a module import leaves behind is the thing observed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.ownredis import run_python

PROBE = (
    "import json, sys\n"
    "from workers.deliver import delivery\n"
    "providers = lambda: sorted(m for m in sys.modules\n"
    "                           if m.startswith('herald.channels.') and m.endswith('.provider'))\n"
    "before = providers()\n"
    "loaded = delivery.preload_providers({consumed})\n"
    "connected = any(getattr(r, '__name__', '') == '_preload_before_fork' for r in\n"
    "                [ref() if callable(ref) else ref for _, ref in delivery.worker_init.receivers])\n"
    "print(json.dumps({{'before': before, 'loaded': loaded, 'after': providers(), 'connected': connected}}))\n")

PROVIDERS = {"HERALD_FCM_BACKEND": "provider", "HERALD_APNS_BACKEND": "provider", "HERALD_WEBPUSH_BACKEND": "provider"}


def probe(consumed: set[str] | None, env: dict[str, str]) -> dict[str, Any]:
    done = run_python(PROBE.format(consumed=repr(consumed)), env)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "ERROR" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("consumed", "expected"), [
    ({"deliver.webpush"}, ["webpush"]),  # a Web Push pool: its own channel only
    ({"urgent"}, ["apns", "fcm", "webpush"]),  # the urgent pool sends on every channel (e-mail is on dev here)
    ({"ingest", "enrich"}, []),  # a pipeline pool never sends
])
def test_a_worker_imports_the_providers_it_sends_on_before_it_forks(consumed: set[str], expected: list[str]) -> None:
    seen = probe(consumed, PROVIDERS)
    # nothing is imported by loading the tasks (routing and validating processes stay light) ...
    assert seen["before"] == []
    # ... and the worker's start imports exactly the providers of the channels it may send on
    assert sorted(seen["loaded"]) == expected
    assert seen["after"] == [f"herald.channels.{name}.provider" for name in expected]
    assert seen["connected"] is True  # on Celery's worker_init: the main process, before the pool forks


def test_a_channel_on_its_dev_backend_imports_no_provider() -> None:
    seen = probe({"urgent"}, {name: "dev" for name in PROVIDERS})
    assert seen["loaded"] == [] and seen["after"] == []
