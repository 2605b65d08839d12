"""Deposit rules: a closed account takes no deposit."""

from __future__ import annotations

from dataclasses import dataclass

CLOSED_PREFIX = "closed-"  # the demo's closed accounts: the failure path, on demand


def is_closed(account_id: str) -> bool:
    return account_id.startswith(CLOSED_PREFIX)


@dataclass
class Account:
    balance: int  # cents

    def deposit(self, amount: int) -> None:
        self.balance += amount
