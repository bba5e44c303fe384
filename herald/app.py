"""The Celery application. Producers only send by task name; workers import the tasks."""

from __future__ import annotations

from celery import Celery

app = Celery("herald")
app.config_from_object("celeryconfig")
