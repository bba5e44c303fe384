"""Beat's table: every sweep is scheduled, and a run that could not start within its period expires."""

from __future__ import annotations

from schedules.beat import schedule


def test_every_schedule_entry_carries_expires_equal_to_its_period() -> None:
    beat_schedule = schedule()
    assert {"sweep-credentials", "scan-backlog", "tick-due-work", "purge-retention", "relay-outbox",
            "recover-stalled-work"} <= set(beat_schedule)
    for entry in beat_schedule.values():
        assert entry["options"]["expires"] == entry["schedule"] > 0
