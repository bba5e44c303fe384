"""``POST /v1/events``: CloudEvents 1.0 over HTTP, in structured, binary and batch mode.

- structured: ``Content-Type: application/cloudevents+json``, the event as one JSON object;
- binary: the attributes as ``ce-*`` headers (``ce-specversion: 1.0``, ``ce-id``, ``ce-type``, ...), the data as
  the JSON body (``Content-Type: application/json``);
- batch: ``Content-Type: application/cloudevents-batch+json``, a JSON array of structured events.

herald's envelope fields are the extension attributes ``environment``, ``severity`` and ``idempotencykey``
(herald/events.py maps them). Each event gets the producer's validation and idempotency (herald/publishing.py:
ingest keeps one event per idempotency key); a batch is all or nothing: one invalid event refuses the whole
batch, with a reason per event. The key's environment must be each event's.

Spec: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.auth import PublishKey
from api.errors import ApiError
from herald.errors import InvalidEvent
from herald.events import EVENT_TYPES, Event, from_cloudevent
from herald.publishing import publish_many
from herald.settings import get_settings

router = APIRouter(tags=["events"])

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH = 100
ENVELOPE_BYTES = 16 * 1024  # room for the attributes around an event's data


class Accepted(BaseModel):
    ids: list[uuid.UUID]  # in the order sent


_CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "environment", "data"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "format": "uuid"},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "enum": sorted(EVENT_TYPES)},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": "string"},
        "datacontenttype": {"type": "string", "enum": ["application/json"]},
        "environment": {"type": "string", "description": "herald extension: the environment (HERALD_ENVIRONMENTS)"},
        "severity": {"type": "string", "enum": ["info", "warning", "error", "critical"]},
        "idempotencykey": {"type": "string", "description": "herald extension: events with one key are one"},
        "data": {"type": "object"},
    },
}

_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    STRUCTURED: {"schema": _CLOUDEVENT_SCHEMA},
    BATCH: {"schema": {"type": "array", "items": _CLOUDEVENT_SCHEMA, "maxItems": MAX_BATCH}},
    "application/json": {"schema": {"type": "object", "description": "binary mode: the event's data; its "
                                    "attributes are the ce-* headers"}},
}}}


@router.post("/v1/events", status_code=202, response_model=Accepted, openapi_extra=_BODY,
             summary="Publish CloudEvents (structured, binary or batch)",
             responses={400: {"description": "an invalid event (a batch: a reason per event)"},
                        401: {"description": "no key, or an unknown or revoked one"},
                        403: {"description": "a key without the publish scope, or of another environment"},
                        413: {"description": "the body is too large"}, 415: {"description": "not a CloudEvent"},
                        503: {"description": "the broker cannot be reached; nothing was accepted"}})
async def post_events(request: Request, key: PublishKey) -> Accepted:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    per_event = get_settings().max_event_bytes + ENVELOPE_BYTES
    if media == BATCH:
        events = _batch(_json(await _body(request, per_event * MAX_BATCH)), key.environment)
    elif media == STRUCTURED:
        events = [_one(_structured(_json(await _body(request, per_event))), key.environment)]
    elif "ce-specversion" in request.headers:
        events = [_one(_binary(request.headers, media, await _body(request, per_event)), key.environment)]
    else:
        raise ApiError(415, f"send {STRUCTURED} (structured mode), {BATCH} (a batch), or ce-* headers with a "
                            "JSON body (binary mode)")
    ids = await run_in_threadpool(publish_many, events)
    return Accepted(ids=ids)


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (never read whole into memory first)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # NaN and Infinity: Postgres' jsonb cannot hold them


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses as infinity, which jsonb cannot hold either
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except (ValueError, RecursionError):
        raise ApiError(400, "the body is not valid JSON", error="invalid event") from None


def _structured(body: Any) -> Event:
    """A CloudEvent as a JSON object, checked against CloudEvents 1.0, then as herald checks every event."""
    if not isinstance(body, dict):
        raise InvalidEvent("a CloudEvent is a JSON object")
    if body.get("specversion") != "1.0":
        raise InvalidEvent('specversion: must be "1.0"')
    for name in ("id", "source", "type"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidEvent(f"{name}: required (CloudEvents 1.0)")
    if "data_base64" in body:
        raise InvalidEvent("data_base64: herald takes JSON data only")
    content_type = body.get("datacontenttype")
    if content_type is not None and not _is_json(content_type):
        raise InvalidEvent("datacontenttype: herald takes application/json data only")
    return from_cloudevent(body)


def _is_json(media: Any) -> bool:
    if not isinstance(media, str):
        return False
    media = media.split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _binary(headers: Mapping[str, str], media: str, raw: bytes) -> Event:
    """Binary mode: attributes from the ce-* headers (percent-decoded, as the HTTP binding says), data from the body."""
    if not _is_json(media):
        raise ApiError(415, "binary mode: the body is the event's data, Content-Type: application/json")
    attributes: dict[str, Any] = {name[3:]: unquote(value) for name, value in headers.items()
                                  if name.lower().startswith("ce-")}
    attributes["data"] = _json(raw)
    return _structured(attributes)


def _one(event: Event, environment: str) -> Event:
    if event.environment != environment:
        raise ApiError(403, f"the key belongs to environment {environment!r}; the event is for "
                            f"{event.environment!r}")
    return event


def _batch(body: Any, environment: str) -> list[Event]:
    """Every event of a batch checked before any is published: one refusal refuses them all."""
    if not isinstance(body, list) or not body:
        raise ApiError(400, "a batch is a non-empty JSON array of CloudEvents", error="invalid event")
    if len(body) > MAX_BATCH:
        raise ApiError(413, f"a batch holds at most {MAX_BATCH} events, not {len(body)}")
    events, problems, status = [], [], 400
    for index, item in enumerate(body):
        try:
            events.append(_one(_structured(item), environment))
        except InvalidEvent as exc:
            problems.append({"index": index, "reason": str(exc)})
        except ApiError as exc:
            status = 403
            problems.append({"index": index, "reason": exc.reason})
    if problems:
        raise ApiError(status, f"{len(problems)} of {len(body)} events refused; none was published",
                       error="invalid batch" if status == 400 else None, items=problems)
    return events
