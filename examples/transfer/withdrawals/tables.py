"""Withdrawals' tables: each account's balance, and every withdrawal (so it can be refunded)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Connection, MetaData, String, Table, select, update

from examples.transfer.withdrawals.model import Account

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("saga_id", String(200), primary_key=True),
    Column("account_id", String(64), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),
    Column("outcome", String(80), nullable=False),  # withdrawn | refunded | failed:<reason>
)


class WithdrawalRecords:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def account(self, account_id: str, opening_balance: int) -> Account:
        """The account, locked for this transaction; one seen for the first time opens with ``opening_balance``."""
        query = select(accounts.c.balance).where(accounts.c.account_id == account_id).with_for_update()
        balance = self.conn.execute(query).scalar()
        if balance is None:
            self.conn.execute(accounts.insert(), {"account_id": account_id, "balance": opening_balance})
            return Account(opening_balance)
        return Account(balance)

    def save(self, account_id: str, account: Account) -> None:
        self.conn.execute(update(accounts).where(accounts.c.account_id == account_id).values(balance=account.balance))

    def add(self, **row: Any) -> None:
        self.conn.execute(withdrawals.insert(), row)

    def get(self, saga_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(withdrawals).where(withdrawals.c.saga_id == saga_id)).first()
        return row._asdict() if row else None

    def mark(self, saga_id: str, outcome: str) -> None:
        self.conn.execute(update(withdrawals).where(withdrawals.c.saga_id == saga_id).values(outcome=outcome))
