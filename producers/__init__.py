"""What integration code imports to talk to herald.

    from producers import publish, artifact_deployed
    event_id = publish(artifact_deployed("orders-api", kind="api", environment="test"))

Answers on a person's behalf go through :func:`respond` (an API key with the answers scope).
"""

from herald.answers import AnswerOutcome, AnswerRefused
from herald.errors import BrokerUnavailable, InvalidEvent, PublishError
from herald.events import Event, Severity, from_cloudevent, make_event
from herald.keys import KeyRefused
from herald.publishing import publish, publish_many
from producers.answers import respond
from producers.devices import register_device
from producers.helpers import (
    approval_requested,
    artifact_deployed,
    artifact_event,
    artifact_retired,
    artifact_updated,
    business_event,
    credential_expiring,
    flow_event,
    flow_failed,
    flow_recovered,
    ops_event,
)
from producers.inventory import declare_credential

__all__ = [
    "AnswerOutcome", "AnswerRefused", "BrokerUnavailable", "Event", "InvalidEvent", "KeyRefused", "PublishError",
    "Severity", "approval_requested", "artifact_deployed", "artifact_event", "artifact_retired", "artifact_updated",
    "business_event", "credential_expiring", "declare_credential", "flow_event", "flow_failed", "flow_recovered",
    "from_cloudevent", "make_event", "ops_event", "publish", "publish_many", "register_device", "respond",
]
