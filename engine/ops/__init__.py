"""Operator tools, one name each: reset a service's offsets (``offsets.reset``: ``pokesaga
replay``), list and republish dead letters (``deadletters.republish``: ``pokesaga dlq replay``), the
brokers' ACLs derived from the declaration (``acls.derive``: ``pokesaga acls``).
A rebuild, what follows a reset, is the worker's (engine.worker.rebuild)."""
