"""A third step for the toy saga, in its own files: a test adds it with one line of declaration."""
