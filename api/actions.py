"""``POST /v1/actions``: a tap on a notification's action, sent with the action token the push carried.

The token is the credential (signed for one notification, person and action; herald/actions.py), so the call needs
no sign-in. It is applied through the one authorization of every door (herald/answers.py ``apply_token``): used
once, then authorized like any answer. A refused answer is recorded (answer and audit rows) before the 4xx goes
out; a malformed, forged, expired or revoked token changes nothing.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.errors import ApiError
from api.fields import storable
from herald import actions, answers, db

router = APIRouter(tags=["actions"])



class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=actions.MAX_TOKEN_CHARS, description="the action token of the push")
    comment: str | None = Field(default=None, max_length=2000, description="shown to the others and written back")

    _storable = field_validator("token", "comment")(storable)


class AnswerOut(BaseModel):
    answer_id: int
    applied: bool
    subject: dict[str, Any]  # the incident or approval as it now stands


@router.post("/v1/actions", response_model=AnswerOut, summary="Apply an action token (acknowledge, approve, ...)",
             responses={400: {"description": "a malformed token"},
                        401: {"description": "a forged token, or one whose key was removed"},
                        403: {"description": "the person may not answer this (recorded)"},
                        404: {"description": "nothing to answer (recorded)"},
                        409: {"description": "already answered, or this token was used before"},
                        410: {"description": "the token expired, or the subject is closed"}})
def apply_action(body: ActionIn) -> AnswerOut:
    try:
        with db.session() as s:  # commits a refusal's rows too: they are the audit trail
            outcome = answers.apply_token(s, body.token, body.comment)
    except actions.TokenRefused as exc:
        raise ApiError(exc.status, exc.reason) from None
    if not outcome.applied:
        raise ApiError(outcome.status, outcome.reason or "the answer was refused", answer_id=outcome.answer_id)
    return AnswerOut(answer_id=outcome.answer_id, applied=True, subject=outcome.subject)
