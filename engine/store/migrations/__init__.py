"""Versioned schemas (see engine.store.migrate): the engine's own history in ``versions/``, each
service's in its own ``migrations`` folder, both run through this folder's Alembic environment."""
