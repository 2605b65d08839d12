"""Sagas other than the capture, written on the engine's public API alone (``from engine import ...``)."""
