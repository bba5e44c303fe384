"""``POST /v1/answers``: integration code answers on a person's behalf, with a key of the answers scope.

The person is named in ``on_behalf_of`` (id, email or alias); the key and the person are both recorded on the answer
and its audit row. The answer goes through the same authorization as a tap on a phone (herald/answers.py ``apply``):
the person must have been asked, an approval's requester never votes, and the subject must be in the key's
environment (another environment's incident is 404, as if it did not exist).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.actions import AnswerOut
from api.auth import key_with
from api.errors import ApiError
from api.fields import MAX_ID, storable
from herald import answers, db, keys

router = APIRouter(tags=["actions"])

AnswersKey = Annotated[keys.KeyInfo, Depends(key_with("answers"))]


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_type: Literal["incident", "approval"]
    subject_id: int = Field(ge=1, le=MAX_ID)
    action: Literal["acknowledge", "resolve", "follow_up", "approve", "reject", "request_info"]
    on_behalf_of: str = Field(min_length=1, max_length=128, description="the person answering: id, email or alias")
    comment: str | None = Field(default=None, max_length=2000)
    assignee: str | None = Field(default=None, max_length=64, description="follow_up: who takes the incident over")

    _storable = field_validator("on_behalf_of", "comment", "assignee")(storable)


@router.post("/v1/answers", response_model=AnswerOut, summary="Answer on a person's behalf (answers key)",
             responses={401: {"description": "no key, or an unknown or revoked one"},
                        403: {"description": "a key without the answers scope, or the person may not answer "
                                             "(recorded)"},
                        404: {"description": "no such incident or approval in the key's environment (recorded)"},
                        409: {"description": "already answered or decided (recorded)"},
                        410: {"description": "the approval expired (recorded)"}})
def answer_on_behalf(key: AnswersKey, body: AnswerIn) -> AnswerOut:
    request = answers.AnswerRequest(
        subject_type=body.subject_type, subject_id=body.subject_id, action=body.action, person=body.on_behalf_of,
        environment=key.environment, via="api", comment=body.comment, assignee=body.assignee, key_id=key.id,
        on_behalf_of=body.on_behalf_of)
    with db.session() as s:  # commits a refusal's rows too: they are the audit trail
        outcome = answers.apply(s, request)
    if not outcome.applied:
        raise ApiError(outcome.status, outcome.reason or "the answer was refused", answer_id=outcome.answer_id)
    return AnswerOut(answer_id=outcome.answer_id, applied=True, subject=outcome.subject)
