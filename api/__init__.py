"""herald's HTTP API (FastAPI): a shell over the core, like cli/. ``herald api`` serves :func:`create_app`."""

from api.app import create_app

__all__ = ["create_app"]
