"""Who may do what on the brokers, derived from the saga's declaration: one principal per service,
least privilege, so a forged event is refused by the broker rather than by hope.

``derive(saga)`` is the whole table, and pure. Each service (its step and its compensator alike:
one service, one principal, ``User:<service>``) may

- **read** the topics its participants consume, with their consumer groups (``status``,
  ``status.compensations``);
- **write** only the topics of the events it publishes, its dead-letter topics and the retry notices';
- **read** the saga's other topics: a database found created empty is rebuilt from what the service
  published (engine.worker.rebuild reads every topic of the saga to find it) — reading, never writing;
- **describe** every topic of the saga: a service checks at start that each exists, replicated.

The tracker (``User:tracker``) reads every topic it observes and its own consumer group, describes
the participants' groups (the console's lag), and writes (and makes) only its table's changelog.
The starter (``User:starter``, any client that starts sagas) writes only the start topic, and reads
the outcomes (``start --wait``). Operators' commands (replay, dlq, inspect, this one's ``--apply``)
run as an administrator, a super user of the brokers: none of these principals may move a group's
offsets or republish a dead letter.

No cluster-wide right is needed: an idempotent producer (acks=all) is allowed its producer id by
WRITE on any topic (KIP-679), and no transactional id is used. Topics are made by whoever applies the
ACLs (``apply`` makes the missing ones first), so no service needs CREATE but the tracker, whose
changelog faust makes itself.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from engine.broker import kafka
from engine.saga import Saga
from engine.wire.deadletter import dead_letters
from engine.wire.text import printable

TRACKER = "tracker"
STARTER = "starter"
NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

# Kafka's codes (org.apache.kafka.common.acl / resource), for CreateAcls
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8}
RESOURCES = {"Topic": 2, "Group": 3}
ALLOW, LITERAL = 3, 3


@dataclass(frozen=True, order=True)
class Acl:
    """One allow rule: ``principal`` (``User:status``) may ``operation`` the ``resource`` named ``name``
    (a literal name: no prefix, no wildcard). ``why`` says which part of the declaration asks for it."""

    principal: str
    resource: str  # Topic | Group
    name: str
    operation: str  # Read | Write | Create | Describe
    why: str = field(default="", compare=False)

    def command(self, bootstrap: str, config: str = "") -> str:
        """The ``kafka-acls.sh`` line that adds it (``config``: the admin's ``--command-config`` file)."""
        words = ["kafka-acls.sh", "--bootstrap-server", bootstrap]
        words += ["--command-config", config] if config else []
        words += ["--add", "--allow-principal", self.principal, "--operation", self.operation]
        words += [f"--{self.resource.lower()}", self.name]
        return shlex.join(words)


class _Table:
    """The rules as they are added: one per (principal, resource, name, operation), the first reason kept."""

    def __init__(self) -> None:
        self.rules: dict[tuple[str, str, str, str], Acl] = {}

    def allow(self, user: str, operation: str, resource: str, names: Iterable[str], why: str) -> None:
        for name in names:
            acl = Acl(f"User:{user}", resource, name, operation, why)
            self.rules.setdefault((acl.principal, resource, name, operation), acl)

    def has(self, user: str, resource: str, name: str, *operations: str) -> bool:
        return any((f"User:{user}", resource, name, op) in self.rules for op in operations)


def derive(saga: Saga, tracker: str = TRACKER, starter: str = STARTER) -> list[Acl]:
    """Every ACL of the saga's principals, by principal (services in the declaration's order, then
    the tracker, then the starter); ValueError when two roles would share a principal."""
    from engine.tracker.tracking import app_id, internal_topics  # names only: no faust

    for name in (tracker, starter):
        if not NAME.fullmatch(name):
            raise ValueError(f"principal {name!r:.80}: 1 to 64 letters, digits, '.', '_' or '-'")
    roles = [*saga.services, tracker, starter]
    twice = sorted({r for r in roles if roles.count(r) > 1})
    if twice:
        raise ValueError(f"principal User:{twice[0]} would be two roles' (a service, the tracker, the starter): "
                         "name the tracker's or the starter's otherwise")  # fmt: skip
    table = _Table()
    everything = saga.all_topics()
    for service in saga.services:
        participants = saga.service_of(service)
        consumed = list(dict.fromkeys(t for p in participants for t in p.topics))
        table.allow(service, "Read", "Group", [p.name for p in participants], "its consumer group")
        table.allow(service, "Read", "Topic", consumed, "it consumes it")
        published = _published(saga, service)
        for topic, events in published.items():
            table.allow(service, "Write", "Topic", [topic], f"it publishes {', '.join(events)}")
        table.allow(service, "Write", "Topic", [dead_letters(t) for t in consumed], "its dead letters")
        if any(p.retries_topic for p in participants):
            table.allow(service, "Write", "Topic", [saga.retries_topic], "its retry notices")
        read_back = saga.published_topics(p.name for p in participants)  # where it publishes, or did
        table.allow(service, "Read", "Topic", read_back, "a rebuild reads back what it published")
        _describe_the_rest(table, service, everything, "checked at start: every topic of the saga exists")
    observed = (*saga.topics, saga.retries_topic, *(dead_letters(t) for t in saga.consumed))
    table.allow(tracker, "Read", "Group", [app_id(saga)], "its consumer group (the faust app's id)")
    table.allow(tracker, "Read", "Topic", observed, "it observes every saga")
    for operation in ("Read", "Write", "Create"):
        table.allow(tracker, operation, "Topic", internal_topics(saga), "its table's changelog (faust makes it)")
    table.allow(tracker, "Describe", "Group", list(saga.participants), "the console's lag and live members")
    _describe_the_rest(table, tracker, everything, "checked at start: every topic of the saga exists")
    outcomes = sorted({cls.topic for cls in saga.outcomes})
    table.allow(starter, "Write", "Topic", [saga.start.topic], f"it starts sagas ({saga.start.__name__})")
    table.allow(starter, "Read", "Topic", outcomes, "start --wait reads the outcome")
    _describe_the_rest(table, starter, everything, "a client checks that every topic of the saga exists")
    order = {f"User:{r}": i for i, r in enumerate(roles)}
    return sorted(table.rules.values(), key=lambda a: order[a.principal])


def _published(saga: Saga, service: str) -> dict[str, list[str]]:
    """Each topic ``service`` publishes to, and the events it publishes there (step and compensator)."""
    found: dict[str, list[str]] = {}
    for cls in dict.fromkeys(cls for p in saga.service_of(service) for cls in saga.published[p.name]):
        found.setdefault(cls.topic, []).append(cls.__name__)
    return found


def _describe_the_rest(table: _Table, user: str, topics: Iterable[str], why: str) -> None:
    """Describe on each of ``topics`` ``user`` may not already read or write (either implies it)."""
    table.allow(user, "Describe", "Topic", [t for t in topics if not table.has(user, "Topic", t, "Read", "Write")], why)


def principals(acls: Iterable[Acl]) -> list[str]:
    """The principals of ``acls``, in their order (``User:status`` …)."""
    return list(dict.fromkeys(a.principal for a in acls))


def may(acls: Iterable[Acl], principal: str, operation: str, topic: str) -> bool:
    """Whether ``principal`` may ``operation`` (Read, Write, Describe) the topic ``topic``, as the
    broker would decide from these rules alone (Read or Write allow Describe)."""
    allowed = {a.operation for a in acls if a.principal == principal and a.resource == "Topic" and a.name == topic}
    return operation in allowed or (operation == "Describe" and bool(allowed & {"Read", "Write"}))


def table(acls: Iterable[Acl]) -> str:
    """The rules as a text table: principal, operation, resource, name, why."""
    rows = [("PRINCIPAL", "OPERATION", "RESOURCE", "NAME", "WHY")]
    rows += [(a.principal, a.operation, a.resource, a.name, a.why) for a in acls]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[4]]) for row in rows)


class ApplyFailed(Exception):
    """The brokers refused an ACL (no authorizer, not an administrator); the message is one line."""


async def apply(
    bootstrap: str, acls: list[Acl], topics: list[str], partitions: int, replication: int | None = None
) -> int:
    """Make the missing ``topics`` (as a service would: ``replication``, unset: as the cluster allows),
    then add every ACL; how many were sent.

    Adding an ACL that exists changes nothing, so this may run again after the declaration
    changed (it never removes one: ``kafka-acls.sh --remove`` does)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import ClusterAuthorizationFailedError, for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    await kafka.ensure_topics(bootstrap, topics, partitions, replication=replication)

    async def add(admin: AIOKafkaAdminClient) -> int:
        for acl in acls:
            request = CreateAclsRequest(
                RESOURCES[acl.resource], acl.name, LITERAL, acl.principal, "*", OPERATIONS[acl.operation], ALLOW
            )
            response = await admin._send_request(request)  # aiokafka 0.14 has the request, not the call
            for code, message in (tuple(r)[:2] for r in response.creation_responses):
                if code == ClusterAuthorizationFailedError.errno:
                    raise ApplyFailed("the brokers refused to add ACLs: only an administrator may (ALTER on the "
                                      "cluster); run it with a super user's credentials")  # fmt: skip
                if code:
                    said = f"{for_code(code).__name__}{f' ({printable(message, 200)})' if message else ''}"
                    rule = f"{acl.principal} {acl.operation} {acl.resource} {acl.name}"
                    raise ApplyFailed(f"the brokers refused the ACL {rule}: {said}")
        return len(acls)

    return await kafka.with_admin(bootstrap, add)
