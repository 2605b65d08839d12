"""The saga tracker: a read model of every saga of one saga declaration, built only by reading its
topics. It imports no saga: ``app.run(saga, settings, display)`` (or ``python -m engine.tracker
MODULE:SAGA``) and ``trace.find``/``trace.render`` are handed the declaration, and what a saga shows
beyond it (outcome states, the fields of its start event) as a ``tracking.Display``."""
