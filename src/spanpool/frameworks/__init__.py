"""Adapters for the frameworks most applications reach Spanner through.

- :mod:`spanpool.frameworks.dbapi` (also :mod:`spanpool.dbapi`): the DB-API ``connect`` with
  one ``Client`` and ``Database`` per process.
- :mod:`spanpool.frameworks.sqlalchemy`: a ``creator`` for ``sqlalchemy-spanner`` engines.
- :mod:`spanpool.frameworks.django`: ``OPTIONS`` for ``django-google-spanner``.

Each imports its framework only when imported itself.
"""
