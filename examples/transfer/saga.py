"""The transfer saga, declared once: two steps and the compensation that refunds the first."""

from __future__ import annotations

from engine import Compensation, Saga, Service, Step
from examples.transfer.deposits.handlers import deposit
from examples.transfer.deposits.tables import DepositRecords
from examples.transfer.withdrawals import handlers as withdrawals_step
from examples.transfer.withdrawals.compensations import undo_withdraw
from examples.transfer.withdrawals.tables import WithdrawalRecords

withdrawals, deposits = Service("withdrawals", WithdrawalRecords), Service("deposits", DepositRecords)

TRANSFER = Saga(
    "transfer",
    steps=(Step(withdrawals, withdrawals_step.withdraw, give_up=withdrawals_step.give_up), Step(deposits, deposit)),
    compensations=(Compensation(withdrawals, undo_withdraw),),
)
