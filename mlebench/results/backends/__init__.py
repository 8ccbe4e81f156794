"""The results store's back ends: an SQLite file (:mod:`.sqlite`) or a PostgreSQL database
(:mod:`.postgres`), both behind :class:`~.base.Backend`."""

from __future__ import annotations

from mlebench.results.backends.base import Backend
from mlebench.results.target import StoreTarget


def open_backend(target: StoreTarget, *, readonly: bool = False, migrating: bool = False) -> Backend:
    """The back end ``target`` names, opened and guarded (see each back end's docstring)."""
    if target.is_file:
        from mlebench.results.backends.sqlite import SQLiteBackend

        return SQLiteBackend(target, readonly=readonly, migrating=migrating)
    from mlebench.results.backends.postgres import PostgresBackend

    return PostgresBackend(target, readonly=readonly, migrating=migrating)


__all__ = ["Backend", "open_backend"]
