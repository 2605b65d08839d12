"""Operator tools, one name each: reset a service's offsets (``offsets.reset``: ``pokesaga
replay``), list and republish dead letters (``deadletters.republish``: ``pokesaga dlq replay``).
A rebuild, what follows a reset, is the worker's (engine.worker.rebuild)."""
