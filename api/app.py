"""The HTTP API's application: ``create_app()`` assembles the routers (``herald api`` serves it with uvicorn)."""

from __future__ import annotations

from fastapi import FastAPI

from api import actions, answers, devices, errors, events, health, me, metrics, page, read
from api.limits import BodyLimit


def create_app() -> FastAPI:
    app = FastAPI(title="herald", version="1", summary="Events in, answers back: herald's HTTP API.",
                  description="Authentication: `Authorization: Bearer ...` with an API key (integration code) or "
                              "a person's session or OIDC token. Refusals are JSON: "
                              '`{"error": "...", "reason": "..."}`. See docs/api.md.')
    errors.install(app)
    app.add_middleware(BodyLimit)
    for module in (health, events, actions, answers, devices, me, read, page, metrics):
        app.include_router(module.router)
    return app
