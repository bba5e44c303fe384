"""Liveness and readiness: ``/healthz`` (the process answers) and ``/readyz`` (it can reach what it needs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.errors import redact
from herald import db

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_S = 3.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str  # ready, unavailable
    database: str  # ok, or why it cannot be reached
    broker: str


@router.get("/healthz", response_model=Health, summary="The process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, summary="The database and the broker are reachable",
            responses={503: {"model": Readiness, "description": "what cannot be reached"}})
def readyz() -> Any:
    database, broker = _database(), _broker()
    ready = database == "ok" and broker == "ok"
    body = Readiness(status="ready" if ready else "unavailable", database=database, broker=broker)
    return body if ready else JSONResponse(body.model_dump(), status_code=503)


def _database() -> str:
    try:
        with db.engine().connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", said in one line
        return f"unreachable: {redact(str(exc)) or type(exc).__name__}"
    return "ok"


def _broker() -> str:
    from herald.app import app as celery_app

    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.2, timeout=BROKER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - as above
        return f"unreachable: {redact(str(exc)) or type(exc).__name__}"
    return "ok"
