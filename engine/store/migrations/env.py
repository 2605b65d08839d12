"""Alembic environment: runs inside the connection and transaction engine.store.migrate opened,
for one history (the engine's or a service's), with that history's version table."""

from __future__ import annotations

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=config.attributes["metadata"],
    version_table=config.attributes["version_table"],
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
    include_object=config.attributes.get("include_object"),  # a new revision: the service's own tables only
)
with context.begin_transaction():
    context.run_migrations()
