"""Compensating handlers: one per service with something to undo.

They listen on the failure topics (``capture.failures.<service>``, and ``capture.failures`` for
failures written before each service had its own) and unwind the saga backwards, newest step first, one
local transaction per hop, exactly like forward handlers (inbox, outbox, idempotent).
A compensation that finds nothing to undo is a no-op that still passes the chain on; one for
a saga its service has no record of is refused (``Rejected``: a dead letter), since nothing
of that saga ever happened here to unwind.
"""
