"""The engine's settings, read from the environment (prefix ``POKESAGA_``), built once and passed down.

Defaults work on a laptop; the environment overrides them; an explicit argument (the
CLI's flags) overrides both. A saga binds its services with ``Settings.for_saga(saga)``, or
subclasses ``Settings`` to add its business settings and names its ``SERVICES``. Each service's
database is an entry of ``databases``: see engine.settings.database.

``Settings`` is its groups, each a module here: ``broker`` (which brokers, consumer groups,
topics), ``security`` (TLS and SASL), ``database`` (each service's database, its inbox and
outbox), ``failures`` (retry policies, injected faults), ``running`` (the loop, metrics, health,
tracing) and ``local`` (the local broker, the tracker). A ``POKESAGA_…`` variable that none of
them reads is said once, as a warning (engine.settings.variables). ``python -m
engine.settings.document`` writes every setting as docs/configuration.md shows them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from engine.settings.broker import BrokerSettings
from engine.settings.database import DatabaseSettings, check_database_url, mask_password
from engine.settings.failures import FailureSettings
from engine.settings.local import LocalSettings
from engine.settings.running import RunningSettings
from engine.settings.security import SecuritySettings
from engine.settings.variables import warn_unknown_variables

if TYPE_CHECKING:
    from engine.saga import Saga

__all__ = ["Settings", "check_database_url", "mask_password"]


# Listed last to first: pydantic orders the fields from the last base on (brokers first).
class Settings(LocalSettings, RunningSettings, FailureSettings, DatabaseSettings, SecuritySettings, BrokerSettings):
    """Every setting of the engine (see the groups' modules); ``for_saga`` binds a saga's services."""

    def __init__(self, **values: Any) -> None:
        warn_unknown_variables(type(self))
        super().__init__(**values)

    @classmethod
    def for_saga(cls, saga: Saga) -> type[Self]:
        """These settings, for the services of ``saga``: what ``databases``, ``step_retry``, ``stall``
        and ``db_url`` accept, and the ``POKESAGA_<SERVICE>_DB_URL`` variables read."""
        name = f"{saga.name.title().replace('_', '')}Settings"
        bound: type[Self] = type(name, (cls,), {"SERVICES": tuple(saga.services), "__module__": cls.__module__})
        return bound
