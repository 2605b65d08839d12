"""Withdrawals' step: take the money from the account it leaves."""

from __future__ import annotations

from engine import UnitOfWork
from examples.transfer.events import MoneyWithdrawn, TransferRequested, WithdrawalFailed
from examples.transfer.withdrawals import model
from examples.transfer.withdrawals.tables import WithdrawalRecords


def withdraw(event: TransferRequested, uow: UnitOfWork[WithdrawalRecords]) -> list[MoneyWithdrawn | WithdrawalFailed]:
    """Take the amount from the account unless that would overdraw it."""
    recorded = uow.recorded[0] if uow.recorded else None  # rebuilding: the balance may be mid-rebuild
    account = uow.records.account(event.from_account, uow.settings.opening_balance)
    try:
        if isinstance(recorded, WithdrawalFailed):
            raise model.InsufficientFunds
        if recorded is not None:
            account.withdraw_recorded(event.amount)
        else:
            account.withdraw(event.amount)
    except model.InsufficientFunds:
        uow.records.add(saga_id=uow.saga_id, account_id=event.from_account, amount=event.amount,
                        outcome="failed:insufficient_funds")  # fmt: skip
        return [WithdrawalFailed.of(event, "insufficient_funds")]
    uow.records.save(event.from_account, account)
    uow.records.add(saga_id=uow.saga_id, account_id=event.from_account, amount=event.amount, outcome="withdrawn")
    return [MoneyWithdrawn(**event.model_dump())]


def give_up(event: TransferRequested, uow: UnitOfWork[WithdrawalRecords], reason: str, detail: str) -> WithdrawalFailed:
    """The step could not be done (retries exhausted, non-retryable error): record it; nothing was taken."""
    uow.records.add(saga_id=uow.saga_id, account_id=event.from_account, amount=event.amount, outcome=f"failed:{reason}")
    return WithdrawalFailed.of(event, reason, detail)
