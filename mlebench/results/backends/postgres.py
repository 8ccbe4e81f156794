"""The PostgreSQL back end: one results store shared by jobs on many machines.

Opening a store connects once and decides, reading only:

- the database holds our version table (:data:`~mlebench.results.schema.VERSION_TABLE`) at the
  current revision: use it; at an older one: refuse, naming ``mlebench results migrate``; at a
  revision this mlebench does not know: refuse, naming an upgrade of mlebench;
- the database holds no table at all (in its current schema): create ours (writers; a reader
  reads it as a store without runs). Creation holds a transaction-level advisory lock, so that of
  several jobs starting at once exactly one creates it, and the others then find it;
- the database holds other tables but not our version table: refuse it, untouched.

A writer's role must be allowed to write our tables: that is checked when the store is opened,
so that a job of a read-only role fails before it trains, not after. A reader's transactions are
``READ ONLY``, so a store opened for reading cannot be written even by a role that could.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from mlebench.errors import ConfigError
from mlebench.results.backends.base import Backend, _first_line
from mlebench.results.migration import create_schema, current_revision
from mlebench.results.schema import VERSION_TABLE, metadata, version_of
from mlebench.results.target import StoreTarget

#: the advisory lock key creation and migration hold ("MLEB" as a number)
ADVISORY_LOCK = 0x4D4C4542
CONNECT_TIMEOUT_S = 10


class PostgresBackend(Backend):
    """A results store in a PostgreSQL database (see the module docstring)."""

    kind = "results database"
    migrate_note = "in one transaction; take a pg_dump first to keep a copy"

    def __init__(self, target: StoreTarget, *, readonly: bool = False, migrating: bool = False) -> None:
        super().__init__(target, readonly=readonly, migrating=migrating)
        try:
            self._engine = sa.create_engine(target.url, poolclass=NullPool,
                                            connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        except (ImportError, sa.exc.ArgumentError) as exc:
            raise ConfigError(f"cannot open {self.label}: {_first_line(exc)}") from exc
        self._open()

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    def begin(self, conn: sa.Connection, writing: bool) -> None:
        if self.readonly:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    def now(self, conn: sa.Connection) -> datetime:
        return conn.execute(sa.select(sa.func.now())).scalar_one().astimezone(timezone.utc)

    def error(self, exc: BaseException, writing: bool) -> ConfigError:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        text = _first_line(exc)
        if sqlstate == "42501":  # insufficient_privilege
            return ConfigError(f"cannot {'write' if writing else 'read'} {self.label}: {text} (the role "
                               f"{self.target.url.username or '(default)'} lacks the privilege)")
        if sqlstate == "25006":  # read_only_sql_transaction
            return ConfigError(f"cannot write {self.label}: {text} (it was opened read-only)")
        if sqlstate == "53100":  # disk_full
            return ConfigError(f"cannot write {self.label}: the server's disk is full ({text}); nothing was "
                               f"written")
        if sqlstate in ("40001", "40P01"):  # serialization failure, deadlock
            return ConfigError(f"{self.label}: a concurrent writer got in the way ({text}); run the command again")
        if sqlstate.startswith("08") or not sqlstate:  # connection exceptions
            return ConfigError(f"cannot connect to {self.label}: {text}")
        return super().error(exc, writing)

    # -- opening ---------------------------------------------------------------------------

    def _tables(self, conn: sa.Connection) -> list[str]:
        """The tables of the connection's current schema (where unqualified names land)."""
        return list(conn.execute(sa.text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "ORDER BY table_name")).scalars())

    def _check(self, conn: sa.Connection) -> bool:
        """True when ours (and a version this mlebench reads), False when empty; else raise."""
        tables = self._tables(conn)
        if VERSION_TABLE not in tables:
            if not tables:
                return False
            shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
            raise ConfigError(f"{self.target} is not an mlebench results database (it holds other tables: "
                              f"{shown}; and no {VERSION_TABLE}); it was left as it is")
        revision = current_revision(conn)
        refusal = self.version_refusal(version_of(revision), repr(revision))
        if refusal is not None:
            raise refusal
        self.version = version_of(revision)
        return True

    def _open(self) -> None:
        with self.transaction(writing=False) as conn:
            ours = self._check(conn)
            if ours and not self.readonly:
                self._check_privileges(conn)
        if ours:
            return
        if self.readonly:
            self.reads_as_empty()
            return
        with self.transaction(writing=True) as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
            if not self._check(conn):  # another job may have created it while we waited
                create_schema(conn)
                self.version = version_of(current_revision(conn))

    def _check_privileges(self, conn: sa.Connection) -> None:
        """Refuse, before a job starts, a role that may not write our tables."""
        for table in metadata.sorted_tables:
            for privilege in ("SELECT", "INSERT", "UPDATE"):
                allowed = conn.execute(sa.select(sa.func.has_table_privilege(table.name, privilege))).scalar_one()
                if not allowed:
                    raise ConfigError(
                        f"cannot write {self.label}: the role {self.target.url.username or '(default)'} may not "
                        f"{privilege} table {table.name} (reading works: `mlebench results list --results "
                        f"{self.target.cli}`)")

    def lock_for_migration(self, conn: sa.Connection) -> None:
        """Hold the creation lock for the rest of ``conn``'s transaction (one migrator at a time)."""
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(ADVISORY_LOCK)))
