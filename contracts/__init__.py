"""The saga's public contract: events, envelope, topic names and exported JSON Schemas.

Imports nothing else of pokesaga, and does no I/O.
"""
