"""Deposits' step: credit the account the money goes to."""

from __future__ import annotations

from engine import UnitOfWork
from examples.transfer.deposits import model
from examples.transfer.deposits.tables import DepositRecords
from examples.transfer.events import DepositFailed, MoneyDeposited, MoneyWithdrawn


def deposit(event: MoneyWithdrawn, uow: UnitOfWork[DepositRecords]) -> list[MoneyDeposited | DepositFailed]:
    """Credit the account unless it is closed."""
    if model.is_closed(event.to_account):
        uow.records.add(saga_id=uow.saga_id, account_id=event.to_account, amount=event.amount,
                        outcome="failed:account_closed")  # fmt: skip
        return [DepositFailed.of(event, "account_closed")]
    account = uow.records.account(event.to_account, uow.settings.opening_balance)
    account.deposit(event.amount)
    uow.records.save(event.to_account, account)
    uow.records.add(saga_id=uow.saga_id, account_id=event.to_account, amount=event.amount, outcome="deposited")
    return [MoneyDeposited(**event.model_dump())]
