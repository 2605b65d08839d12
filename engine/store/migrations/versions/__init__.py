"""The engine's own revisions: its history, in its own version table (engine.store.migrate)."""
