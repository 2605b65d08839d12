"""The secured compose variant's one-shot job (docker-compose.secured.yml, its ``secrets`` service):
a CA and the broker's certificate, a password for each principal the saga's ACLs name and for
``admin``, and the tracker's console token, each written to the volume of the containers that use
it (mounted there alone, at /run/pokesaga):

    /secrets/kafka/   ca.pem; broker.pem, its key and certificate (PEM, as Kafka reads it); scram-arguments,
                      the --add-scram arguments the broker's storage is formatted with (deploy/secured/kafka-start)
    /secrets/<p>/     ca.pem and <p>.env (KAFKA_SASL_PASSWORD=…), for each principal p: status, combat,
                      pokeball, delivery, tracker (its POKESAGA_TRACKER_TOKEN=… too), starter, admin
    /secrets/admin/   admin.properties too: the --command-config of Kafka's tools, as admin

It keeps what it finds: run again (each ``docker compose up``), it changes nothing, as the broker's
storage holds the passwords it was formatted with. The files are made as ``pokesaga kafka start
--secure`` makes its own (engine/local/secured.py). They are readable by any user of the container
that mounts them: each image runs as a user of its own, and the volume is what keeps one principal's
password from another's container.

    python3 credentials.py /secrets
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from capture.saga import CAPTURE
from engine.local.secured import ADMIN, SecuredListener, passwords
from engine.ops import acls

BROKER = "kafka"  # the broker's container: its name on the compose network, and its volume's
ALIASES = ("localhost", "127.0.0.1")  # the host's clients reach it on the host's loopback
MOUNTED = Path("/run/pokesaga")  # where each container finds its volume
TOKEN = "POKESAGA_TRACKER_TOKEN"


def principals() -> list[str]:
    """The saga's principals (``pokesaga acls``: a service each, the tracker, the starter) and admin."""
    return [*(p.removeprefix("User:") for p in acls.principals(acls.derive(CAPTURE))), ADMIN]


def make(root: Path) -> list[Path]:
    """Everything above, under ``root`` (one folder per volume, each already there); what it wrote."""
    users = principals()
    folders = {name: root / name for name in (BROKER, *users)}
    if missing := [str(folder) for folder in folders.values() if not folder.is_dir()]:
        raise SystemExit(f"secrets: no volume mounted at {', '.join(missing)}")
    kept = {user: passwords(folders[user], [user])[user] for user in users}
    listener = SecuredListener(folders[BROKER], 9092, kept, name=BROKER, aliases=ALIASES)
    if not listener.keystore.exists():
        listener.make_certificates()
        for path in listener.client_files:  # a client certificate the compose variant does not use
            path.unlink()
    written = [readable(listener.keystore), readable(listener.ca_file)]
    written.append(readable(folders[BROKER] / "scram-arguments", "\n".join(listener.format_arguments()) + "\n"))
    ca = listener.ca_file.read_text()
    for user in users:
        lines = [f"KAFKA_SASL_PASSWORD={listener.users[user]}"]
        if user == acls.TRACKER:
            lines.append(f"{TOKEN}={token(folders[user] / f'{user}.env')}")
        written += [readable(folders[user] / "ca.pem", ca), readable(folders[user] / f"{user}.env", lines)]
    tool = listener.tool_properties(ADMIN, MOUNTED / "ca.pem")
    written.append(readable(folders[ADMIN] / f"{ADMIN}.properties", tool))
    return written


def token(kept: Path) -> str:
    """The console's token ``kept`` holds, else a new one."""
    lines = kept.read_text().splitlines() if kept.exists() else []
    found = [line.split("=", 1)[1] for line in lines if line.startswith(f"{TOKEN}=")]
    return found[0] if found else secrets.token_urlsafe(24)


def readable(path: Path, text: str | list[str] | None = None) -> Path:
    """``path`` (written with ``text``, lines or a string, if given), readable by anyone who sees it."""
    if text is not None:
        path.unlink(missing_ok=True)  # read-only, as it was left
        path.write_text("\n".join(text) + "\n" if isinstance(text, list) else text)
    path.chmod(0o444)
    return path


if __name__ == "__main__":
    made = make(Path(sys.argv[1] if len(sys.argv) > 1 else "/secrets"))
    print(f"secrets: {len(made)} files kept or made, for {', '.join(principals())} and the broker")
