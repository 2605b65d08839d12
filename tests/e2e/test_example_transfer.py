"""The transfer example end to end: its two services as separate OS processes, on a broker of their own,
driven through its command line (the engine's verbs: run, start, inspect saga, trace, dlq) and topics only;
balances read from each service's own database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from engine import Envelope
from engine.broker import kafka
from examples.transfer.events import OUTCOMES
from examples.transfer.saga import TRANSFER
from examples.transfer.settings import SERVICES, Settings
from tests import databases
from tests.conftest import new_broker
from tests.support import caught_up, eventually, terminate

OPENING = 100_00  # every new account's balance, in cents (the default)


def database_urls(label: str) -> dict[str, str]:
    """A new PostgreSQL database per service when POKESAGA_TEST_POSTGRES is set; {} (SQLite files) otherwise."""
    if databases.ADMIN_URL is None:
        return {}
    prefix = f"t_{label.lower()[:20]}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(databases.ADMIN_URL, isolation_level="AUTOCOMMIT")
    urls = {}
    try:
        with admin.connect() as conn:
            for service in SERVICES:
                conn.execute(text(f'CREATE DATABASE "{prefix}_{service}"'))
                databases.CREATED.append(f"{prefix}_{service}")  # dropped when the session ends
                url = make_url(databases.ADMIN_URL).set(database=f"{prefix}_{service}")
                urls[f"{service}_db_url"] = url.render_as_string(hide_password=False)
    finally:
        admin.dispose()
    return urls


class Bank:
    """The example's services, each ``python -m examples.transfer run NAME`` in a process of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.settings.bootstrap
        env["POKESAGA_DATA_DIR"] = str(self.settings.data_dir)
        for service in SERVICES:
            url = getattr(self.settings, f"{service}_db_url")
            if url:
                env[f"POKESAGA_{service.upper()}_DB_URL"] = url
        return env | extra

    def start(self, service: str, **env: str) -> subprocess.Popen[bytes]:
        log = self.settings.data_dir / "logs" / f"{service}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "examples.transfer", "run", service],
                env=self.env(**env), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.processes[service] = process
        return process

    def stop(self, service: str) -> int:
        """SIGTERM; SIGKILL if it has not left within 30 s. Its exit code."""
        return terminate(self.processes[service])

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """``python -m examples.transfer ARGS``, as a user runs it."""
        return subprocess.run(
            [sys.executable, "-m", "examples.transfer", *args],
            env=self.env(), input=stdin, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def transfer(self, source: str, target: str, amount: int, *flags: str) -> list[str]:
        """``python -m examples.transfer start JSON``: its lines of output."""
        event = json.dumps({"from_account": source, "to_account": target, "amount": amount})
        done = self.cli("start", event, *flags)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    def balance(self, service: str, account: str) -> int | None:
        found = databases.rows(self.settings, service, "SELECT balance FROM accounts WHERE account_id = :a", a=account)
        return found[0][0] if found else None

    def rows(self, service: str, saga_id: str) -> list[tuple[Any, ...]]:
        """The service's record of the saga: (account, amount, outcome)."""
        query = f"SELECT account_id, amount, outcome FROM {service} WHERE saga_id = :s"
        return databases.rows(self.settings, service, query, s=saga_id)

    def joined(self) -> None:
        groups = TRANSFER.groups
        asyncio.run(eventually(lambda: kafka.groups_stable(self.settings.bootstrap, groups), 90, "services consuming"))

    def settled(self) -> None:
        """Every participant has committed up to the end of what it reads: nothing more is coming."""
        groups = TRANSFER.groups
        asyncio.run(eventually(lambda: caught_up(self.settings.bootstrap, groups), 60, "every participant caught up"))

    def outcomes(self, saga_id: str) -> list[Envelope]:
        records, _ = asyncio.run(kafka.read_to_end(self.settings.bootstrap, [OUTCOMES]))
        return [Envelope.model_validate_json(r.value) for r in records if r.key == saga_id.encode() and r.value]

    def ended(self, saga_id: str) -> Envelope:
        """The saga's only outcome, once it has one and everything is settled."""

        async def has_outcome() -> bool:
            return bool(await asyncio.to_thread(self.outcomes, saga_id))

        asyncio.run(eventually(has_outcome, 60, f"an outcome of saga {saga_id}"))
        self.settled()
        (outcome,) = self.outcomes(saga_id)
        return outcome


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bank]:
    """Both services running, on a broker of their own: no other module's consumer takes a record."""
    data = tmp_path_factory.mktemp("transfer")
    with new_broker(data / "broker") as bootstrap:
        settings = Settings(kafka_bootstrap_servers=bootstrap, data_dir=data / "data", **database_urls("transfer"))
        running = Bank(settings)
        try:
            for service in SERVICES:
                running.start(service)
            running.joined()
            yield running
        finally:
            died = {s: p.returncode for s, p in running.processes.items() if p.poll() is not None}
            codes = {service: running.stop(service) for service in list(running.processes)}
        assert not died, f"services died during the tests: {died} (logs in {data / 'data' / 'logs'})"
        assert set(codes.values()) == {0}, f"services did not stop cleanly: {codes}"


def test_a_transfer_moves_the_money_exactly_once(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    saga_id, said = bank.transfer(f"alice-{tag}", f"bob-{tag}", 25_00, "--wait")
    assert said == f'MoneyDeposited: {{"amount": 2500, "from_account": "alice-{tag}", "to_account": "bob-{tag}"}}'
    assert bank.ended(saga_id).type == "MoneyDeposited"
    assert bank.balance("withdrawals", f"alice-{tag}") == OPENING - 25_00
    assert bank.balance("deposits", f"bob-{tag}") == OPENING + 25_00
    assert bank.rows("withdrawals", saga_id) == [(f"alice-{tag}", 25_00, "withdrawn")]
    assert bank.rows("deposits", saga_id) == [(f"bob-{tag}", 25_00, "deposited")]


def test_a_deposit_to_a_closed_account_refunds_the_withdrawal(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    (saga_id,) = bank.transfer(f"alice-{tag}", f"closed-{tag}", 40_00)
    outcome = bank.ended(saga_id)
    assert (outcome.type, outcome.data["reason"], outcome.data["failed_step"]) == (
        "TransferFailed", "account_closed", "deposits",
    )  # fmt: skip
    assert outcome.data["undone"] == ["withdrawals"]
    assert bank.balance("withdrawals", f"alice-{tag}") == OPENING  # taken, then given back
    assert bank.rows("withdrawals", saga_id) == [(f"alice-{tag}", 40_00, "refunded")]
    assert bank.rows("deposits", saga_id) == [(f"closed-{tag}", 40_00, "failed:account_closed")]
    assert bank.balance("deposits", f"closed-{tag}") is None


def test_a_withdrawal_beyond_the_balance_fails_with_nothing_to_undo(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    (saga_id,) = bank.transfer(f"alice-{tag}", f"bob-{tag}", OPENING + 1)
    outcome = bank.ended(saga_id)
    assert (outcome.type, outcome.data["reason"], outcome.data["failed_step"]) == (
        "TransferFailed", "insufficient_funds", "withdrawals",
    )  # fmt: skip
    assert outcome.data["undone"] == []
    assert bank.balance("withdrawals", f"alice-{tag}") == OPENING
    assert bank.rows("deposits", saga_id) == []


def test_a_deposit_committed_but_not_published_completes_once_after_a_crash(bank: Bank) -> None:
    """The deposits process dies right after its local commit (nothing published, no offset committed);
    restarted, it publishes what it committed, and the redelivered record hits the inbox."""
    bank.settled()
    assert bank.stop("deposits") == 0
    crashing = bank.start("deposits", POKESAGA_CRASH_AT="after-local-commit")
    bank.joined()
    tag = uuid.uuid4().hex[:6]
    (saga_id,) = bank.transfer(f"dave-{tag}", f"erin-{tag}", 12_34)

    async def died() -> bool:
        return crashing.poll() is not None

    asyncio.run(eventually(died, 60, "the deposits process to crash"))
    assert crashing.returncode == 137
    assert bank.rows("deposits", saga_id) == [(f"erin-{tag}", 12_34, "deposited")]  # committed ...
    assert bank.outcomes(saga_id) == []  # ... not published
    bank.start("deposits")
    assert bank.ended(saga_id).type == "MoneyDeposited"
    assert bank.balance("deposits", f"erin-{tag}") == OPENING + 12_34  # deposited once
    assert bank.rows("deposits", saga_id) == [(f"erin-{tag}", 12_34, "deposited")]
    assert bank.balance("withdrawals", f"dave-{tag}") == OPENING - 12_34


def test_a_failed_transfer_is_waited_for_with_its_reason_and_what_was_undone(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    saga_id, said = bank.transfer(f"alice-{tag}", f"closed-{tag}", 10_00, "--wait", "--deadline", "2m")
    assert said == "TransferFailed: account_closed at deposits; undone: withdrawals"
    assert bank.ended(saga_id).sagadeadline is not None  # carried to the outcome from the start event


def test_the_start_event_is_read_from_stdin_and_validated_against_the_saga_start(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    event = json.dumps({"from_account": f"frank-{tag}", "to_account": f"gina-{tag}", "amount": 1_00})
    done = bank.cli("start", "--saga-id", f"given-{tag}", stdin=event)
    assert (done.returncode, done.stdout) == (0, f"given-{tag}\n"), done.stderr
    assert bank.ended(f"given-{tag}").type == "MoneyDeposited"
    refused = bank.cli("start", '{"from_account": "a", "to_account": "b"}')
    assert refused.returncode == 2
    assert refused.stderr == "python -m examples.transfer start: TransferRequested: amount: Field required\n"


def test_inspect_saga_shows_what_each_service_applied(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    (saga_id,) = bank.transfer(f"hal-{tag}", f"closed-{tag}", 5_00)
    bank.ended(saga_id)
    done = bank.cli("inspect", "saga", saga_id, "--json")
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    applied = {s: [(r["participant"], r["event_type"]) for r in view[s]] for s in SERVICES}
    assert applied == {
        "withdrawals": [("withdrawals", "TransferRequested"), ("withdrawals.compensations", "DepositFailed")],
        "deposits": [("deposits", "MoneyWithdrawn")],
    }
    assert view["parked"] == []
    shown = bank.cli("inspect", "saga", saga_id)
    assert shown.stdout.splitlines() == [
        f"saga {saga_id}",
        "  withdrawals  withdrawals: TransferRequested; withdrawals.compensations: DepositFailed",
        "  deposits     deposits: MoneyWithdrawn",
    ]


def test_dlq_list_says_what_is_dead_lettered(bank: Bank) -> None:
    done = bank.cli("dlq", "list", "transfer.deposit")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith(" in transfer.deposit.dlq")


def test_trace_shows_the_timeline(bank: Bank) -> None:
    tag = uuid.uuid4().hex[:6]
    saga_id, _ = bank.transfer(f"ivy-{tag}", f"jon-{tag}", 1_00, "--wait")
    done = bank.cli("trace", saga_id, "--json")
    assert done.returncode == 0, done.stderr
    assert [e["type"] for e in json.loads(done.stdout)["events"]] == [
        "TransferRequested", "MoneyWithdrawn", "MoneyDeposited",
    ]  # fmt: skip
