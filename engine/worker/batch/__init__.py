"""The batch ladder: validate a batch and apply it in one local transaction."""
