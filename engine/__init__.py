"""The saga engine: how any choreographed saga runs over Kafka. It knows no saga of its own.

A saga hands the engine its declaration and nothing else; the engine never imports it.
What a saga's code uses (the rest is the engine's own business):

- ``Saga``, ``Step``, ``Compensation``, ``Service``: the declaration (``engine.saga``);
- ``Event``, ``FailureEvent``, ``bounded``, ``added``: what its events are, and how a new version
  of one reads the older ones (``engine.events``, ``engine.versions``);
- ``UnitOfWork``, ``Rejected``: what a handler receives, and how it refuses a record
  (``engine.participant``);
- ``Settings``: the engine's settings, for the saga to extend (``engine.settings``);
- ``serve``: run one of its services in this process (``engine.worker.run``);
- ``wrap``, ``Envelope``: the CloudEvents envelope, to start a saga (``engine.wire.envelope``);
- ``HandlerEnvironment``: one handler run on its service's tables, no broker (``engine.testing``).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.events import Event, FailureEvent, added, bounded
    from engine.participant import Rejected, UnitOfWork
    from engine.saga import Compensation, Saga, Service, Step
    from engine.settings import Settings
    from engine.testing import HandlerEnvironment
    from engine.wire.envelope import Envelope, wrap
    from engine.worker.run import serve

# Where each name lives, imported when first asked for: a process that needs one part (a command
# that only reads a topic, a saga's events) does not pay for the rest (the worker, Alembic, the
# exporters): each Python process of a saga starts sooner.
_HOME = {
    "Event": "engine.events",
    "FailureEvent": "engine.events",
    "added": "engine.events",
    "bounded": "engine.events",
    "Rejected": "engine.participant",
    "UnitOfWork": "engine.participant",
    "Compensation": "engine.saga",
    "Saga": "engine.saga",
    "Service": "engine.saga",
    "Step": "engine.saga",
    "Settings": "engine.settings",
    "HandlerEnvironment": "engine.testing",
    "Envelope": "engine.wire.envelope",
    "wrap": "engine.wire.envelope",
    "serve": "engine.worker.run",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Compensation",
    "Envelope",
    "Event",
    "FailureEvent",
    "HandlerEnvironment",
    "Rejected",
    "Saga",
    "Service",
    "Settings",
    "Step",
    "UnitOfWork",
    "added",
    "bounded",
    "serve",
    "wrap",
]
