"""Withdrawals' compensation: refund the withdrawal, then end the saga with TransferFailed."""

from __future__ import annotations

from engine import Rejected, UnitOfWork
from examples.transfer.events import TransferFailed, TransferFailure
from examples.transfer.withdrawals.tables import WithdrawalRecords


def undo_withdraw(event: TransferFailure, uow: UnitOfWork[WithdrawalRecords]) -> list[TransferFailed]:
    """Put the money back in the account it left, if it left; every failure ends here, once."""
    withdrawal = uow.records.get(uow.saga_id)
    if withdrawal is None:
        raise Rejected("unknown_saga", f"withdrawals never saw saga {uow.saga_id!r}: there is nothing to unwind")
    undone = event.undone
    if withdrawal["outcome"] == "withdrawn":
        account = uow.records.account(withdrawal["account_id"], uow.settings.opening_balance)
        account.refund(withdrawal["amount"])
        uow.records.save(withdrawal["account_id"], account)
        uow.records.mark(uow.saga_id, "refunded")
        undone = (*undone, "withdrawals")
    return [TransferFailed.of(event, undone=undone)]
