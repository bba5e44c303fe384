"""The audit trail: who did what to which incident, approval or device."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from herald.models import AuditLog


def audit(db: Session, actor: str, action: str, subject_type: str, subject_id: object,
          **details: Any) -> None:
    db.add(AuditLog(actor=actor, action=action, subject_type=subject_type, subject_id=str(subject_id),
                    details=details))
