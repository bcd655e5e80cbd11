"""Alembic environment: migrates the connection Database.open() hands over, or, from the command line,
$DATABASE_URL (with the same SQLite settings the app uses)."""

import os

from alembic import context

from storage.engine import make_engine, migrating
from storage.models import Base


def run(connection) -> None:
    # Batch mode lets later revisions alter SQLite tables (by copying them), which plain ALTER cannot.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with migrating(make_engine(os.environ["DATABASE_URL"])) as connection:
        run(connection)
