"""Versioned schemas, one Alembic history per service database (see engine.store.migrate)."""
