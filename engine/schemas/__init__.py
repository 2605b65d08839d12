"""Released event schemas: the compatibility check (``compat``) and the files kept in the repository
(``released``), behind ``<program> schemas check`` and ``schemas release`` (engine.cli.schemas)."""

from engine.schemas.compat import breaking
from engine.schemas.released import Release, Released, check, read, release, render

__all__ = ["Release", "Released", "breaking", "check", "read", "release", "render"]
