"""Alembic environment: always run with a connection handed in by `tuneforge.store.db.migrate`."""

from alembic import context

from tuneforge.store import tables  # noqa: F401  (registers every table on Base.metadata)
from tuneforge.store.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
)
with context.begin_transaction():
    context.run_migrations()
