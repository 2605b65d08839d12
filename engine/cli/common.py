"""What every command shares: errors as one line, the settings from flags and environment,
the checks made before any connection. ``PROG`` is the program's name every error line starts with
(``pokesaga``; set by engine.cli.main)."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import math
import os
import re
import signal
import socket
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from engine.broker import security
from engine.settings import Settings, mask_password

PROG = "pokesaga"  # the program's name, as its error lines start


class Usage(Exception):
    """A wrong argument: one line, exit code 2."""


class Misconfigured(Exception):
    """A setting that cannot work: one line naming it and what to do. Exit code 2 when the
    value itself is wrong, 1 when what it names is unavailable (a port taken, a server down)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


ECHOED = 60  # what an error shows of a value the user gave: enough to recognise it, on one line
MAX_LINE = 400  # an error that echoes what we do not word (argparse's invalid choice, a setting's check)


def cut(text: str, limit: int = ECHOED) -> str:
    """A value the user gave, as an error echoes it: its first ``limit`` characters, then …"""
    return text if len(text) <= limit else f"{text[:limit]}…"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(cut(f"{self.prog}: {message}", MAX_LINE))


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {cut(text)!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {cut(str(value))}")
    return value


def iso_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date-time like 2026-11-23T10:00:00Z, got {cut(text)!r}"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|s|m|h|d)")
DEADLINE_FORMS = "a duration such as 500ms, 30s, 2m, 1h or 1m30s, or an RFC 3339 time such as 2026-11-23T10:00:00Z"


def duration(text: str) -> timedelta:
    """``500ms``, ``30s``, ``2m``, ``1h``, ``1d``, or several of them (``1m30s``), as a timedelta."""
    compact = text.strip()
    if not compact or DURATION.sub("", compact):
        raise ValueError(f"expected {DEADLINE_FORMS}; got {cut(text)!r}")
    seconds = sum(float(number) * DURATION_UNITS[unit] for number, unit in DURATION.findall(compact))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{cut(text)!r} is too long a duration") from None


def saga_id(text: str) -> str:
    """A saga id given on the command line: printable, 1 to 200 characters."""
    from engine.client import check_saga_id

    try:
        return check_saga_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds(text: str) -> float:
    """A number of seconds above 0 (not nan, not infinite)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0; got {cut(text)!r}")
    return value


def deadline(text: str) -> datetime:
    """When a saga must be over: a duration from now, or an RFC 3339 time (UTC if it names no offset)."""
    now = datetime.now(UTC)
    try:
        until = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            span = duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if not span:
            raise argparse.ArgumentTypeError(f"expected a duration above 0; got {cut(text)!r}") from None
        try:
            return now + span
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{cut(text)!r} is too long a duration") from None
    until = until if until.tzinfo else until.replace(tzinfo=UTC)
    if until <= now:
        raise argparse.ArgumentTypeError(f"{cut(text)!r} is already past (it is now {now:%Y-%m-%dT%H:%M:%SZ})")
    return until


# The settings a global flag can give, and the flag: an error then names the flag.
FLAGS = {"kafka_bootstrap_servers": "--bootstrap-servers", "data_dir": "--data-dir", "partitions": "--partitions"}

# Settings read as KAFKA_… (as other Kafka tools name them), POKESAGA_KAFKA_… too.
KAFKA_SECURITY = tuple(name for name in Settings.model_fields if name.startswith(("kafka_ssl_", "kafka_sasl_")))
KAFKA_SECURITY += ("kafka_security_protocol",)

JSON_EXAMPLES = {
    "retry": '{"maximum_attempts": 10}',
    "compensation_retry": '{"initial_interval": 0.1}',
    "step_retry": '{"pokeball": {"maximum_attempts": 10}}',
}


def setting_name(field: str, args: argparse.Namespace | None = None) -> str:
    """How the user gave the setting ``field``: its flag if one was passed, else its variable."""
    field = field.lower() if field.lower() in ("kafka_bootstrap_servers", *KAFKA_SECURITY) else field
    if args is not None and field in FLAGS and getattr(args, FLAGS[field].lstrip("-").replace("-", "_"), None):
        return FLAGS[field]
    if field == "kafka_bootstrap_servers" or field in KAFKA_SECURITY:
        return field.upper()
    return field if field.isupper() else f"POKESAGA_{field.upper()}"


def describe_invalid(exc: ValidationError, args: argparse.Namespace | None = None) -> str:
    """The first error of invalid settings, as one line naming the setting."""
    error = exc.errors()[0]
    if not error["loc"]:  # settings that only make sense together: the message names them
        return cut(f"{PROG}: {error['msg'].removeprefix('Value error, ')}", MAX_LINE)
    field, *inner = error["loc"]
    name = setting_name(str(field), args)
    message = error["msg"].removeprefix("Value error, ").removeprefix(f"{name}: ")
    if error["type"] != "value_error" and isinstance(error.get("input"), str | int | float):
        given = error["input"]
        message += f" (got {cut(given) if isinstance(given, str) else given!r})"
    where = ".".join(map(str, inner))
    return cut(f"{PROG}: {name}: {where + ': ' if where else ''}{message}", MAX_LINE)


def settings_from(args: argparse.Namespace, kind: type[Settings] = Settings) -> Settings:
    """The settings of ``kind`` (the saga's class) from the environment, the global flags over it."""
    overrides: dict[str, Any] = {}
    if args.bootstrap_servers:
        overrides["kafka_bootstrap_servers"] = args.bootstrap_servers
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.partitions:
        overrides["partitions"] = args.partitions
    try:
        settings = kind(**overrides)
    except ValidationError as exc:
        raise Misconfigured(describe_invalid(exc, args)) from None
    except SettingsError as exc:  # a value that is not even JSON, e.g. POKESAGA_STEP_RETRY
        found = re.search(r'field "(\w+)"', str(exc))
        field = found[1] if found else "settings"
        example = f"; expected JSON such as {JSON_EXAMPLES[field]}" if field in JSON_EXAMPLES else ""
        raise Misconfigured(f"{PROG}: {setting_name(field, args)}: not valid JSON ({exc.__cause__}){example}") from None
    try:
        security.secure(settings)  # every Kafka client of this process, for these brokers
    except ValueError as exc:  # a CA, certificate or key file that cannot be loaded
        raise Misconfigured(cut(f"{PROG}: {exc}", MAX_LINE)) from None
    return settings


def check_databases(settings: Settings, services: Iterable[str], args: argparse.Namespace, create: bool) -> None:
    """Each service's database can be opened, before any broker connection; else one line
    naming the setting. ``create``: the command will create SQLite files (run, db); inspect
    never creates a database just to look at it, so it only checks servers."""
    from engine.store.db import make_engine

    for service in services:
        url = settings.db_url(service)
        override = settings.database_setting(service)  # the variable that named it, if any
        name = override or setting_name("data_dir", args)
        sqlite = make_url(url).get_backend_name() == "sqlite"
        if sqlite and not override:
            check_data_dir(settings.data_dir, name, create)
        if sqlite and not create:
            continue
        # libpq waits for an unreachable host as long as TCP does: bound it
        postgres = make_url(url).get_dialect().driver in ("psycopg", "psycopg2")
        try:
            engine = make_engine(url, **({"connect_args": {"connect_timeout": 10}} if postgres else {}))
        except OSError as exc:  # the folder of a SQLite file given by URL
            raise Misconfigured(f"{PROG}: {name}: cannot create {exc.filename}: {exc.strerror or exc}", 1) from None
        try:
            with engine.connect():
                pass
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            raise Misconfigured(
                f"{PROG}: database unavailable: {name} ({mask_password(url)}): {reason}; is the server running?", 1
            ) from None
        finally:
            engine.dispose()


def check_data_dir(path: Path, name: str, create: bool) -> None:
    """The data directory exists (``create``: can be created) and is writable; else one line."""
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise Misconfigured(f"{PROG}: {name}: {path} is a file; choose a folder pokesaga can write", 1) from None
        except OSError as exc:
            raise Misconfigured(
                f"{PROG}: {name}: cannot create {path}: {exc.strerror or exc}; choose a folder pokesaga can write",
                1,
            ) from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise Misconfigured(f"{PROG}: {name}: {path} is not writable; choose a folder pokesaga can write", 1)
        return
    existing = next((p for p in (path, *path.absolute().parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == path.absolute() else f"cannot be a folder: {existing} is a file"
        raise Misconfigured(f"{PROG}: {name}: {path} {what}; choose a folder pokesaga can write", 1)


def check_port(port: int | None, host: str, name: str) -> None:
    """Nothing holds ``host:port``, and ``host`` is this machine's (port 0: any free port;
    None: nothing served); else one line naming the setting."""
    if port is None:
        return
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP servers bind
        try:
            sock.bind((host, port))
        except OSError as exc:
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise Misconfigured(
                    f"{PROG}: POKESAGA_METRICS_HOST: cannot serve on {host}:{port}: {exc.strerror or exc}"
                    "; expected an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
                    1,
                ) from None
            hint = "another process holds it" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise Misconfigured(
                f"{PROG}: {name}: cannot serve on {host}:{port}: {hint}; choose another port (0: any free one)", 1
            ) from None


class Failed(Exception):
    """A command that could not do its work: one line (the whole message), exit code 1."""


LocalBroker = Callable[[Any], str | None]  # takes the settings, of the saga's own class
S = TypeVar("S", bound=Settings)


def with_broker(settings: S, command: str, local: LocalBroker | None = None) -> S:
    """``settings`` with a bootstrap address: the configured one, else ``local``'s (the address of a
    development broker running on this machine, when the program has one)."""
    if settings.kafka_bootstrap_servers:
        return settings
    address = local(settings) if local is not None else None
    if address is None:
        hint = f" or run '{PROG} kafka start'" if local is not None else ""
        raise Usage(f"{PROG} {command}: no broker: set KAFKA_BOOTSTRAP_SERVERS{hint}")
    return settings.model_copy(update={"kafka_bootstrap_servers": address})


def check_replication(settings: Settings, names: Iterable[str], internal: Iterable[str] = ()) -> Settings:
    """The topics ``names`` exist (created if missing) with the replication the settings ask,
    and so do ``internal`` ones that exist already; else one line, before the service says
    anything else. Returns ``settings`` with that replication resolved."""
    from engine.broker import kafka, replication

    async def check() -> int:
        wanted = await replication.ensure_replicated(settings, names)
        await replication.refuse_under_replicated(settings, internal, wanted)
        return wanted

    try:
        wanted = asyncio.run(check())
    except (replication.UnderReplicated, kafka.ReplicationUnavailable) as exc:
        raise Misconfigured(f"{PROG}: {exc}", 1) from None
    return settings.model_copy(update={"replication_factor": wanted})


def run_loop(main: Coroutine[Any, Any, None], use_uvloop: bool, asked: bool = False, tls: bool = False) -> None:
    """asyncio.run, on uvloop when it is installed and not turned off (POKESAGA_UVLOOP, on by
    default); without it, asyncio's own loop (a warning only when ``asked`` for it explicitly).

    Over TLS (``tls``), asyncio's own loop: uvloop closes a TLS connection only after its 30 s
    shutdown timeout and aiokafka's ``close()`` waits for it, so every client a service stops (at its
    end, and when a check at start is done) took 30 s — measured 30.0 s against 0.5 s on asyncio's."""
    if use_uvloop and tls:
        if asked:
            logging.getLogger(__name__).warning(
                "POKESAGA_UVLOOP is set, but the brokers are reached over TLS: asyncio's loop instead "
                "(uvloop waits out a 30 s shutdown timeout at each TLS close)"
            )
        use_uvloop = False
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            if asked:
                logging.getLogger(__name__).warning("POKESAGA_UVLOOP is set but uvloop is not installed")
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def stop_on_sigterm() -> None:
    """SIGTERM ends the command like Ctrl-C does: its clean-up (processes, broker) still runs."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
