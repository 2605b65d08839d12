"""How a participant runs: the loop (poll -> apply -> publish -> commit), the batch, the
flusher, rebuild, and running a saga's participants in one process."""
