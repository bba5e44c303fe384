"""``herald metrics serve|show``: herald's Prometheus metrics over HTTP for a worker host, or once on stdout."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.output import EXIT_FAILED, fail, out

metrics_app = typer.Typer(help="Prometheus metrics: deliveries, latency, queues, circuits, dead letters, "
                               "credentials, sweeps, write-back.", no_args_is_help=True)

DEFAULT_PORT = 9464  # the port OpenTelemetry's Prometheus exporter takes by convention

Cluster = Annotated[bool, typer.Option(
    "--cluster/--no-cluster", help="Also read the database and broker gauges (queues, circuits, dead letters, "
                                   "credentials, sweeps, write-back) at each scrape; --no-cluster serves only "
                                   "what this host's processes counted, when another endpoint serves those.")]


@metrics_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on: loopback unless told otherwise "
                                           "(the endpoint has no authentication).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = DEFAULT_PORT,
    cluster: Cluster = True,
) -> None:
    """Serve /metrics for Prometheus: what every herald process of this host counted (HERALD_METRICS_DIR) and
    herald's state read from the database and the broker at each scrape. Runs until stopped.

    Every worker, and this command, must see the same HERALD_METRICS_DIR (default <data_dir>/metrics).

    Examples:

        herald metrics serve                          # http://127.0.0.1:9464/metrics

        herald metrics serve --host 0.0.0.0 --no-cluster   # a second worker host: its own counters only
    """
    from prometheus_client import start_http_server

    from schedules.metrics import registry

    try:
        server, thread = start_http_server(port, addr=host, registry=registry(cluster=cluster))
    except OSError as exc:
        fail(EXIT_FAILED, f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    out.print(f"serving herald metrics on http://{host}:{port}/metrics")
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()


@metrics_app.command("show")
def show(cluster: Cluster = True) -> None:
    """Print one scrape in Prometheus's text format, as /metrics answers it.

    Example:

        herald metrics show | promtool check metrics
    """
    from schedules.metrics import exposition

    sys.stdout.buffer.write(exposition(cluster=cluster))
    sys.stdout.flush()
