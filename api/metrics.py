"""``GET /metrics``: herald's Prometheus metrics, as ``herald metrics serve`` answers them, for a key of the read scope.

Unlike ``herald metrics serve`` (a worker host's endpoint on loopback), the API is the door phones reach
(HERALD_PUBLIC_URL), so its scrape asks for a key: the series name credentials, webhook endpoints and provider
hosts. Prometheus sends it with ``authorization: {credentials_file: ...}`` (deploy/prometheus/prometheus.yml);
a read key of any environment will do, since the metrics are herald's, not one environment's.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.auth import ReadKey
from schedules.metrics import CONTENT_TYPE_LATEST, exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)",
            responses={200: {"content": {"text/plain": {}}, "description": "one scrape"}})
def metrics(_key: ReadKey) -> Response:
    # A sync route: FastAPI runs it in its thread pool, so the scrape's database and broker reads block no request.
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
