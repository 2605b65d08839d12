"""How every Kafka client of this process authenticates: TLS and SASL, from the settings.

One profile per bootstrap address, set once where the process reads its settings
(``secure(settings)``); every client ``engine.broker.kafka`` builds for that address takes its
options (``options_for``). Keyed by address, not threaded through every function that takes
one: dozens of calls (admin, scans, offsets, the tracker's clients) already carry the address,
and one process may speak to two brokers (a test to a plain and a secured one).

A refused connection is not retried: aiokafka reports a wrong password, an untrusted or
misnamed certificate, a client certificate missing or refused, and a TLS listener asked without
TLS alike, as "Unable to bootstrap" or a connection closed, which reads as a broker down and
would be waited for. On the first failure, ``refusal`` connects once more to say which it was,
in one line (engine.broker.kafka.with_admin raises it as AccessRefused; the CLI prints it).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

if TYPE_CHECKING:
    from engine.settings import Settings

_PROFILES: dict[str, dict[str, Any]] = {}
_CERTIFIED: set[str] = set()  # the addresses whose clients show a certificate of their own
PROBE_TIMEOUT = 10.0
MISMATCH = (62, 64)  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


class AccessRefused(KafkaError):
    """The broker refused this client (credentials, certificate): retrying cannot help."""

    retriable = False


def client_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's keyword arguments for the settings' security protocol, TLS context and SASL
    credentials; ValueError, naming the setting, for a file that is not what it should be."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl_context(settings)
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password is not None else None
    return options


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the broker's certificate checked against KAFKA_SSL_CAFILE (else the
    system's CAs), its host name too unless KAFKA_SSL_CHECK_HOSTNAME=false; the client's own
    certificate when one is given."""
    cafile = settings.kafka_ssl_cafile
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"KAFKA_SSL_CAFILE: {cafile} holds no usable PEM certificate ({_reason(exc)})") from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile is not None:
        password = settings.kafka_ssl_key_password
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                password.get_secret_value() if password is not None else None,
            )
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(
                f"KAFKA_SSL_CERTFILE/KAFKA_SSL_KEYFILE: cannot load the client certificate "
                f"{settings.kafka_ssl_certfile} and its key ({_reason(exc)})"
            ) from None
    return context


def secure(settings: Settings) -> None:
    """Every client this process makes for the settings' brokers uses their security settings."""
    if settings.kafka_bootstrap_servers:
        _PROFILES[settings.kafka_bootstrap_servers] = client_options(settings)
        if settings.kafka_ssl_certfile is not None:
            _CERTIFIED.add(settings.kafka_bootstrap_servers)
        else:
            _CERTIFIED.discard(settings.kafka_bootstrap_servers)


def options_for(bootstrap: str) -> dict[str, Any]:
    """The security options of the clients of ``bootstrap`` (none: PLAINTEXT)."""
    return dict(_PROFILES.get(bootstrap, {}))


async def refusal(bootstrap: str) -> str | None:
    """Why the brokers of ``bootstrap`` refuse this client, in one line, or None when they do
    not (they accept it, or none answers: a broker down is waited for, not refused)."""
    options = _PROFILES.get(bootstrap)
    if not options:
        return None
    if options["security_protocol"] in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return await _tls_without_tls(bootstrap, options["security_protocol"])
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **options), PROBE_TIMEOUT)
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in MISMATCH:
                return (
                    f"the TLS certificate of {server} does not name {host} ({exc.verify_message}): give "
                    "KAFKA_BOOTSTRAP_SERVERS by a name the certificate holds (or KAFKA_SSL_CHECK_HOSTNAME=false)"
                )
            return (
                f"the TLS certificate of {server} is not trusted ({exc.verify_message}): KAFKA_SSL_CAFILE must "
                "name the CA that signed it"
            )
        except ssl.SSLError as exc:
            return _certificate_refused(server, exc, bootstrap in _CERTIFIED) or (
                f"the TLS handshake with {server} failed ({_reason(exc)}): is it a TLS listener?"
            )
        except SaslAuthenticationFailed:
            return (
                f"{server} refused the credentials of {options['sasl_plain_username']!r} "
                f"({options['sasl_mechanism']}): check KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        except UnsupportedSaslMechanismError as exc:
            return f"{server} does not accept KAFKA_SASL_MECHANISM={options['sasl_mechanism']} ({exc})"
        except (OSError, KafkaError, TimeoutError):
            said = await _after_handshake(host, int(port), options["ssl_context"])
            if said is not None and (reason := _certificate_refused(server, said, bootstrap in _CERTIFIED)):
                return reason
            continue  # not answering: nothing to tell about security
        try:
            if options["security_protocol"] == "SSL" and not await _answers_without_sasl(conn):
                return (
                    f"{server} asks for SASL credentials, and KAFKA_SECURITY_PROTOCOL is SSL: set SASL_SSL, "
                    "KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
                )
        finally:
            conn.close()
    return None


async def _answers_without_sasl(conn: Any) -> bool:
    """A broker that answers a request with no SASL handshake before: a SASL_SSL listener answers
    only ApiVersions (what ``create_conn`` asks), then closes the connection."""
    from aiokafka.protocol.metadata import MetadataRequest

    try:
        await asyncio.wait_for(conn.send(MetadataRequest([])), PROBE_TIMEOUT)
    except (OSError, KafkaError, TimeoutError):
        return False
    return True


async def _after_handshake(host: str, port: int, context: ssl.SSLContext) -> ssl.SSLError | None:
    """The TLS alert a broker sends once the handshake is done, if any: with TLS 1.3 a client
    certificate missing or refused is said only then, and aiokafka sees a connection closed."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return None
    try:
        await asyncio.wait_for(reader.read(1), 3)  # a broker never speaks first: only an alert comes
    except ssl.SSLError as exc:
        return exc
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    return None


def _certificate_refused(server: str, exc: ssl.SSLError, certified: bool) -> str | None:
    """A broker's alert about this client's certificate, as one line; None for any other."""
    reason = str(exc.reason or "")
    alert = "ALERT" in reason and ("CERTIFICATE" in reason or "UNKNOWN_CA" in reason)
    if alert and not certified:  # Kafka says bad_certificate, OpenSSL servers certificate_required
        return f"{server} requires a client certificate: set KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"
    if alert:
        return (
            f"{server} refused this client's certificate ({reason}): KAFKA_SSL_CERTFILE must be signed by a CA "
            "the broker trusts"
        )
    return None


async def _tls_without_tls(bootstrap: str, protocol: str) -> str | None:
    """A listener that completes a TLS handshake, asked for without TLS (the protocol forgotten):
    the broker only ever closes such a connection, which would read as a broker down."""
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE  # only: does it speak TLS at all?
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port), ssl=anything), 3)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return f"{server} speaks TLS, and KAFKA_SECURITY_PROTOCOL is {protocol}: set SSL or SASL_SSL"
    return None


async def refusals() -> str | None:
    """The refusal of any secured broker this process knows, or None."""
    for bootstrap in list(_PROFILES):
        reason = await refusal(bootstrap)
        if reason:
            return reason
    return None


class RefusalsSaidElsewhere(logging.Filter):
    """Drops aiokafka's log of a connection refused for its certificate or credentials: a
    one-shot command says it in its own one line (see refusal)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(isinstance(arg, ssl.SSLError | SaslAuthenticationFailed) for arg in args)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)
