"""The engine's settings, read from the environment (prefix ``POKESAGA_``), built once and passed down.

Defaults work on a laptop; the environment overrides them; an explicit argument (the
CLI's flags) overrides both. A saga subclasses ``Settings`` to add its own fields (its
services' ``<service>_db_url``, its business settings) and names its ``SERVICES``.

``Settings`` is its groups, each a module here: ``broker`` (which brokers, consumer groups,
topics), ``security`` (TLS and SASL), ``database`` (each service's database, its inbox and
outbox), ``failures`` (retry policies, injected faults), ``running`` (the loop, metrics, health,
tracing) and ``local`` (the local broker, the tracker).
"""

from __future__ import annotations

from engine.settings.broker import BrokerSettings
from engine.settings.database import DatabaseSettings, check_database_url, mask_password
from engine.settings.failures import FailureSettings
from engine.settings.local import LocalSettings
from engine.settings.running import RunningSettings
from engine.settings.security import SecuritySettings

__all__ = ["Settings", "check_database_url", "mask_password"]


# Listed last to first: pydantic orders the fields from the last base on (brokers first).
class Settings(LocalSettings, RunningSettings, FailureSettings, DatabaseSettings, SecuritySettings, BrokerSettings):
    """Every setting of the engine (see the groups' modules); a saga subclasses it."""
