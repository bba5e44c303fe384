"""A property-based run over the API's own OpenAPI schema (schemathesis): whatever a client sends, never a 5xx.

Each operation gets generated requests, with the credential it needs (a publish or read key of ``dev``, a signed-in
person) so the run reaches past authentication into the routes' own checks.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from api import create_app
from tests.integration.apiclient import bearer, make_key, sign_in
from tests.integration.conftest import SAMPLE_DIRECTORY, clear_broker

schema = schemathesis.openapi.from_asgi("/openapi.json", create_app())


@pytest.fixture(scope="module")
def credentials() -> Iterator[dict[str, dict[str, str]]]:
    """Bearer headers by who an operation wants; the directory loaded once for the module."""
    from herald import db, directory

    with db.session() as s:
        directory.apply(directory.load(SAMPLE_DIRECTORY), s)
    yield {"publish": bearer(make_key("dev", "publish")), "read": bearer(make_key("dev", "read")),
           "answers": bearer(make_key("dev", "answers")), "person": bearer(sign_in("alice"))}
    clear_broker()  # what the run published, no worker ever takes


def who(path: str) -> str:
    if path == "/v1/events":
        return "publish"
    if path == "/v1/answers":
        return "answers"
    if path.startswith(("/v1/events/", "/v1/incidents/", "/v1/approvals/")):
        return "read"
    return "person"


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: schemathesis.Case, credentials: dict[str, dict[str, str]]) -> None:
    case.call_and_validate(headers=credentials[who(case.path)], checks=[not_a_server_error])
