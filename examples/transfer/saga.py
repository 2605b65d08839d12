"""The transfer saga, declared once: two services, their steps in order, the compensation."""

from __future__ import annotations

from pathlib import Path

from engine import Compensation, Saga, Service, Step
from examples.transfer import events
from examples.transfer.deposits import handlers as deposits_handlers
from examples.transfer.deposits.tables import DepositRecords
from examples.transfer.deposits.tables import metadata as deposits_tables
from examples.transfer.withdrawals import compensations as withdrawals_compensations
from examples.transfer.withdrawals import handlers as withdrawals_handlers
from examples.transfer.withdrawals.tables import WithdrawalRecords
from examples.transfer.withdrawals.tables import metadata as withdrawals_tables

HERE = Path(__file__).parent

withdrawals = Service("withdrawals", withdrawals_tables, WithdrawalRecords, HERE / "withdrawals" / "migrations")
deposits = Service("deposits", deposits_tables, DepositRecords, HERE / "deposits" / "migrations")

TRANSFER = Saga(
    name="transfer",
    events=(
        events.TransferRequested, events.MoneyWithdrawn, events.MoneyDeposited,
        events.WithdrawalFailed, events.DepositFailed, events.TransferFailed,
    ),
    steps=(
        Step(
            withdrawals, events.WITHDRAW, withdrawals_handlers.HANDLERS, withdrawals_handlers.give_up,
            succeeds_with=(events.MoneyWithdrawn,), fails_with=(events.WithdrawalFailed,),
        ),
        Step(
            deposits, events.DEPOSIT, deposits_handlers.HANDLERS, deposits_handlers.give_up,
            succeeds_with=(events.MoneyDeposited,), fails_with=(events.DepositFailed,),
        ),
    ),
    compensations=(
        Compensation(withdrawals, withdrawals_compensations.HANDLERS, publishes=(events.TransferFailed,)),
    ),
    outcomes=(events.MoneyDeposited, events.TransferFailed),
)  # fmt: skip
