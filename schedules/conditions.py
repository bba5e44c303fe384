"""Operations conditions with hysteresis: raised once when crossed, cleared once after staying under.

A value at or over its threshold raises the condition (one ``ops.<condition>`` event); while
raised, nothing more is sent however long it stays over. Once back under, the condition clears
(one ``ops.<condition>_cleared`` event) only after it has stayed under for
``HERALD_BACKLOG_CLEAR_AFTER_S``: a queue hovering around its threshold does not flap.
The state lives in ``ops_conditions``; the events go through the outbox in the sweep's transaction.

``dead_letters`` is raised while any dead letter is open (not replayed): work stopped and waits for
a person (``herald deadletters list``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.orm import Session

from herald import deadletters
from herald.models import OpsCondition
from herald.publishing import publish
from herald.settings import get_settings
from producers.helpers import ops_event

log = logging.getLogger(__name__)

Condition = Literal["queue_backlog", "processing_delayed", "sla_breached", "dead_letters"]
Change = Literal["raised", "cleared"]


def observe(s: Session, condition: Condition, resource: str, value: float | None, threshold: float, *,
            now: datetime, metric: str, source: str) -> Change | None:
    """Record one observation; publish and return the change it makes, if any."""
    row = s.get(OpsCondition, (condition, resource), with_for_update=True)
    if row is None:
        row = OpsCondition(condition=condition, resource=resource, raised=False, threshold=threshold)
        s.add(row)
    row.value, row.threshold, row.updated_at = value, threshold, now
    over = value is not None and value >= threshold
    change: Change | None = None
    if not row.raised:
        if over:
            row.raised, row.raised_at, row.under_since, change = True, now, None, "raised"
    elif over:
        row.under_since = None  # back over before the clearing delay: still the same episode
    else:
        row.under_since = row.under_since or now
        if now - row.under_since >= timedelta(seconds=get_settings().backlog_clear_after_s):
            row.raised, row.cleared_at, change = False, now, "cleared"
    s.flush()
    if change is not None:
        assert row.raised_at is not None
        # One key per episode and direction: a rerun that republishes is deduplicated by ingest.
        key = f"ops:{condition}:{resource}:{row.raised_at.isoformat()}:{change}"
        publish(ops_event(condition, resource, environment=get_settings().ops_environment, metric=metric,
                          value=value if value is not None else 0.0, threshold=threshold,
                          cleared=change == "cleared", idempotency_key=key, source=source), session=s)
        log.warning("%s %s on %s (%s=%s, threshold %s)", condition, change, resource, metric, value, threshold)
    return change


def observe_dead_letters(s: Session, *, now: datetime, source: str) -> dict[str, int]:
    """Raise ``dead_letters`` while any dead letter is open; returns the open ones by kind."""
    counts = deadletters.open_counts(s)
    observe(s, "dead_letters", "herald", sum(counts.values()), 1, now=now, metric="open_dead_letters",
            source=source)
    return counts
