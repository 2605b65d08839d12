"""Compensating handlers: one per service with something to undo.

They listen on ``capture.failures`` and unwind the saga backwards, newest step first, one
local transaction per hop, exactly like forward handlers (inbox, outbox, idempotent).
A compensation that finds nothing to undo is a no-op that still passes the chain on.
"""
