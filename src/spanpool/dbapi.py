"""The Cloud Spanner DB-API with one ``Client`` and ``Database`` per process: see
:mod:`spanpool.frameworks.dbapi`."""

from .frameworks.dbapi import *  # noqa: F403
from .frameworks.dbapi import __all__ as __all__
