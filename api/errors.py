"""What the API answers when it refuses: one JSON shape, ``{"error": ..., "reason": ...}``, for every 4xx and 5xx.

Routes raise :class:`ApiError`; the core's own refusals (an invalid event or device, a broker or database that
cannot be reached) are translated here, at the boundary, so a client never sees a traceback or a 500 for bad input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException

from herald.errors import BrokerUnavailable, InvalidDevice, InvalidEvent

# user:password@ in a URL an exception message may carry (a broker URL): never echoed
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


class ApiError(Exception):
    """A refusal with its status, a short error name and a one-line reason (extra fields ride along)."""

    def __init__(self, status: int, reason: str, *, error: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error or HTTPStatus(status).phrase.lower()
        self.reason = reason
        self.headers = headers
        self.extra = extra


def redact(text: str) -> str:
    """One line of an exception's text, without credentials in URLs."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    return _CREDENTIALS.sub("***@", first)[:300]


def unauthorized(reason: str) -> ApiError:
    return ApiError(401, reason, headers={"WWW-Authenticate": "Bearer"})


def _answer(status: int, reason: str, *, error: str | None = None, headers: Mapping[str, str] | None = None,
            **extra: Any) -> JSONResponse:
    body = {"error": error or HTTPStatus(status).phrase.lower(), "reason": reason, **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_reason(exc: RequestValidationError) -> str:
    # loc and msg only: pydantic's "input" would echo what was sent (a token, say)
    problems = []
    for err in exc.errors()[:5]:
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {str(err.get('msg', 'invalid')).removeprefix('Value error, ')}")
    return "; ".join(problems)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every refusal into the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _answer(exc.status, exc.reason, error=exc.error, headers=exc.headers, **exc.extra)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return _answer(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _answer(422, _validation_reason(exc), error="invalid request")

    @app.exception_handler(InvalidEvent)
    async def _invalid_event(_: Request, exc: InvalidEvent) -> JSONResponse:
        return _answer(400, str(exc), error="invalid event")

    @app.exception_handler(InvalidDevice)
    async def _invalid_device(_: Request, exc: InvalidDevice) -> JSONResponse:
        return _answer(400, str(exc), error="invalid device")

    @app.exception_handler(BrokerUnavailable)
    async def _broker(_: Request, exc: BrokerUnavailable) -> JSONResponse:
        return _answer(503, redact(str(exc)), error="unavailable", headers={"Retry-After": "5"})

    @app.exception_handler(OperationalError)
    async def _database(_: Request, exc: OperationalError) -> JSONResponse:
        return _answer(503, "database unreachable", error="unavailable", headers={"Retry-After": "5"})

    @app.exception_handler(DataError)
    async def _database_refused(_: Request, exc: DataError) -> JSONResponse:
        # a value the routes' own checks let through and the database cannot hold: still the client's input
        # (the reason stays generic: SQL and its parameters are not for clients)
        return _answer(400, "a value in the request is out of range for herald", error="invalid request")
