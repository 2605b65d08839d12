"""The withdrawals service: the accounts money is taken from, and the refunds."""
