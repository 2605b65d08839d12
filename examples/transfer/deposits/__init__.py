"""The deposits service: the accounts money goes to."""
