"""What the transfer saga says: its events, the topic each goes to. Amounts are integer cents.

Every event carries the transfer itself, so each service needs nothing but the event.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from engine import Event, FailureEvent, bounded

WITHDRAW = "transfer.withdraw"
DEPOSIT = "transfer.deposit"
FAILURES = "transfer.failures"
OUTCOMES = "transfer.outcomes"

AccountId = Annotated[str, bounded(64, min_length=1)]
Cents = Annotated[int, Field(gt=0, le=1_000_000_000_00, description="Integer cents, at most a billion units.")]


class Transfer(Event):
    from_account: AccountId
    to_account: AccountId
    amount: Cents


class TransferRequested(Transfer):
    """The start event: a client asks for ``amount`` to move between two accounts."""

    topic: ClassVar[str] = WITHDRAW


class MoneyWithdrawn(Transfer):
    topic: ClassVar[str] = DEPOSIT


class MoneyDeposited(Transfer):
    """The success outcome: the money left one account and reached the other, once."""

    topic: ClassVar[str] = OUTCOMES


class TransferFailure(Transfer, FailureEvent):
    topic: ClassVar[str] = FAILURES


class WithdrawalFailed(TransferFailure):
    """Not enough money in the account (or the step could not be done): nothing to undo."""


class DepositFailed(TransferFailure):
    """The account to credit is closed (or the step could not be done): the withdrawal is refunded."""


class TransferFailed(TransferFailure):
    """The failure outcome: whatever was withdrawn has been refunded (``undone``)."""

    topic: ClassVar[str] = OUTCOMES
