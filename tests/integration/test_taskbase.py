"""The base task lets Celery's own control exceptions through: a retry, an ignore or a reject the task asks for
is done by Celery, never dead-lettered (run eagerly, in this process, by Celery's own machinery)."""

from __future__ import annotations

import pytest
from celery import Celery
from celery.exceptions import Ignore, Reject
from sqlalchemy import select

from herald.models import DeadLetter
from herald.taskbase import HeraldTask
from tests.integration.helpers import rows

_app = Celery("herald-taskbase-test", set_as_current=False)
_calls: list[str] = []


@_app.task(base=HeraldTask, name="tests.taskbase.asks", bind=True, shared=False)  # not in herald's app
def asks(self: HeraldTask, control: str) -> str:
    """Asks Celery for a retry (once), to ignore the message, or to reject it, as a task may."""
    _calls.append(control)
    if control == "retry" and len(_calls) == 1:
        raise self.retry(countdown=0, max_retries=1)
    if control == "ignore":
        raise Ignore()
    if control == "reject":
        raise Reject("not for this worker", requeue=False)
    return "done"


@pytest.mark.parametrize(("control", "calls", "state"), [
    ("retry", ["retry", "retry"], "SUCCESS"),
    ("ignore", ["ignore"], "IGNORED"),
    ("reject", ["reject"], "REJECTED"),
])
def test_a_retry_ignore_or_reject_the_task_asks_for_is_celerys_not_a_dead_letter(
        clean: None, control: str, calls: list[str], state: str) -> None:
    # given a herald task that asks Celery for a retry, to ignore its message or to reject it
    _calls.clear()
    # when it runs
    result = asks.apply(args=[control])
    # then Celery did what was asked (the retry ran the task again), and nothing is a dead letter
    assert (_calls, result.state) == (calls, state)
    assert rows(select(DeadLetter.reason)) == []
