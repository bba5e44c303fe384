"""respond(): integration code answering on a person's behalf (a door, like the API and action tokens).

    from producers import respond
    outcome = respond("acknowledge", key=ANSWERS_KEY, on_behalf_of="chen", incident_id=12)

The key is an API key with the ``answers`` scope (``herald keys create --scope answers``); its
environment is the answer's, so a ``dev`` key never touches a ``prod`` incident. ``on_behalf_of``
names the person (id, email or alias); both are recorded with the answer. The answer is authorized
and applied now, in one transaction, by herald/answers.py (the rules: docs/answers.md); nothing is
sent to the broker to be applied later. A refused answer is recorded, then raised as
:class:`AnswerRefused` (``.status``, ``.reason``); a refused key raises :class:`KeyRefused`.
"""

from __future__ import annotations

from typing import Literal

from herald import answers, db, keys
from herald.answers import AnswerOutcome, AnswerRefused, AnswerRequest

Action = Literal["acknowledge", "resolve", "follow_up", "approve", "reject", "request_info"]


def respond(action: Action, *, key: str, on_behalf_of: str, incident_id: int | None = None,
            approval_id: int | None = None, comment: str | None = None,
            assignee: str | None = None) -> AnswerOutcome:
    """Apply ``action`` to one incident (acknowledge, resolve, follow_up) or approval (approve, reject,
    request_info) as ``on_behalf_of``; returns the applied outcome or raises :class:`AnswerRefused`."""
    if (incident_id is None) == (approval_id is None):
        raise ValueError("respond() names exactly one of incident_id or approval_id")
    with db.session() as s:
        info = keys.authenticate(s, key, scope="answers")
        outcome = answers.apply(s, AnswerRequest(
            subject_type="incident" if incident_id is not None else "approval",
            subject_id=incident_id if incident_id is not None else approval_id,  # type: ignore[arg-type]
            action=action, person=on_behalf_of, environment=info.environment, via="producer", comment=comment,
            assignee=assignee, key_id=info.id, on_behalf_of=on_behalf_of))
    if not outcome.applied:  # committed above: the refusal stays in the audit trail
        raise AnswerRefused(outcome)
    return outcome
