"""Alembic environment: herald's own database, from HERALD_DATABASE_URL or the embedded default."""

from __future__ import annotations

from alembic import context

from herald import db
from herald.models import Base

config = context.config


def run() -> None:
    url = config.attributes.get("url")
    engine = db.make_engine(url) if url else db.engine()
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
