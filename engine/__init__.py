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

from engine.events import Event, FailureEvent, added, bounded
from engine.participant import Rejected, UnitOfWork
from engine.saga import Compensation, Saga, Service, Step
from engine.settings import Settings
from engine.testing import HandlerEnvironment
from engine.wire.envelope import Envelope, wrap
from engine.worker.run import serve

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
