"""Operator tools: move a service's offsets, list and re-publish dead letters."""
