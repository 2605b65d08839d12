"""Withdrawal rules: an account is never overdrawn."""

from __future__ import annotations

from dataclasses import dataclass


class InsufficientFunds(Exception):
    pass


@dataclass
class Account:
    balance: int  # cents

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise InsufficientFunds
        self.balance -= amount

    def withdraw_recorded(self, amount: int) -> None:
        """Re-apply a withdrawal the history says happened, even if a refund that came before it
        has not been re-applied yet (the balance may dip below zero until it is)."""
        self.balance -= amount

    def refund(self, amount: int) -> None:
        self.balance += amount
