"""``herald api``: serve the HTTP API (api/) with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default HERALD_API_HOST, 127.0.0.1): "
                                                  "loopback unless told otherwise.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default HERALD_API_PORT, 8080).",
                                             min=1, max=65535)] = None,
) -> None:
    """Serve the HTTP API: CloudEvents in, answers, devices, reads (OpenAPI at /openapi.json, docs at /docs).

    Examples:

        herald api                           # http://127.0.0.1:8080

        herald api --host 0.0.0.0 --port 8080   # inside a container whose port is published on localhost
    """
    import uvicorn

    from herald.logs import uvicorn_log_config
    from herald.settings import get_settings

    settings = get_settings()
    # proxy headers stay off: behind a TLS proxy, set forwarded_allow_ips there, not here
    uvicorn.run("api.app:create_app", factory=True, host=host or settings.api_host, port=port or settings.api_port,
                log_level="info", proxy_headers=False, server_header=False,
                log_config=uvicorn_log_config())
