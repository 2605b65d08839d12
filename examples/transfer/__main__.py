"""The transfer saga's command line: run a service, start a transfer.

python -m examples.transfer run withdrawals      # the step and its compensator, until SIGTERM
python -m examples.transfer run deposits
python -m examples.transfer start --from alice --to bob --amount 2500 --wait
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import uuid

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from engine import Envelope, serve, wrap
from engine.broker import kafka, security
from examples.transfer.events import OUTCOMES, TransferRequested
from examples.transfer.saga import TRANSFER
from examples.transfer.settings import Settings


async def start(settings: Settings, saga_id: str, event: TransferRequested) -> None:
    """Publish the start event, keyed by the saga id, as any Kafka client could."""
    await kafka.ensure_topics(
        settings.bootstrap, TRANSFER.all_topics(), settings.partitions, replication=settings.replication_factor
    )
    envelope = wrap(event, saga_id=saga_id, source="transfer/cli", causation_id=None)
    producer = kafka.producer(settings.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(event.topic, envelope.to_json(), key=saga_id.encode())
    finally:
        await producer.stop()


async def outcome(settings: Settings, saga_id: str, timeout: float = 60) -> str | None:
    """The saga's outcome, read from ``transfer.outcomes``, as one line; None if none came in time."""
    reader = kafka.consumer(settings.bootstrap, None, OUTCOMES)
    await reader.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                for record in records:
                    if record.key == saga_id.encode() and record.value:
                        return describe(Envelope.model_validate_json(record.value))
    finally:
        await reader.stop()
    return None


def describe(envelope: Envelope) -> str:
    data = envelope.data
    moved = f"{data['amount'] / 100:.2f} from {data['from_account']} to {data['to_account']}"
    if envelope.type == "MoneyDeposited":
        return f"MoneyDeposited: {moved}"
    undone = ", ".join(data.get("undone", ())) or "nothing"
    return f"{envelope.type}: {data['reason']} at {data['failed_step']}; undone: {undone} ({moved})"


def _exit_cleanly(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.transfer", description="The transfer saga.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a service and its compensator until SIGTERM")
    run.add_argument("service", help=f"one of {', '.join(TRANSFER.services)}, or compensations.withdrawals")
    begin = commands.add_parser("start", help="start a transfer; prints its saga id")
    begin.add_argument("--from", dest="from_account", required=True)
    begin.add_argument("--to", dest="to_account", required=True)
    begin.add_argument("--amount", type=int, required=True, help="in cents")
    begin.add_argument("--saga-id", default=None)
    begin.add_argument("--wait", action="store_true", help="then print the outcome")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # A new topic's leader may still be elected as ``start`` sends: aiokafka retries, and warns.
    logging.getLogger("aiokafka").setLevel(logging.WARNING if args.command == "run" else logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings()
        security.secure(settings)
        if args.command == "run":
            TRANSFER.service_of(args.service)  # an unknown name is said before anything starts
            signal.signal(signal.SIGTERM, _exit_cleanly)  # until serve installs its graceful handler
            asyncio.run(serve(TRANSFER, args.service, settings))
            return 0
        event = TransferRequested(from_account=args.from_account, to_account=args.to_account, amount=args.amount)
        saga_id = args.saga_id or str(uuid.uuid4())
        asyncio.run(start(settings, saga_id, event))
        print(saga_id, flush=True)
        if args.wait:
            ended = asyncio.run(outcome(settings, saga_id))
            print(ended or "no outcome within 60s (are both services running?)")
            return 0 if ended else 1
        return 0
    except ValidationError as exc:
        error = exc.errors()[0]
        print(f"transfer: invalid {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, KafkaError) as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
