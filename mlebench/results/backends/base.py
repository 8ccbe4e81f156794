"""What every back end of the results store gives the store: guarded opening, one transaction per
operation, the database's clock, and errors turned into one line naming the store."""

from __future__ import annotations

import abc
import contextlib
import zlib
from datetime import datetime
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from mlebench.errors import ConfigError
from mlebench.results.migration import create_schema
from mlebench.results.schema import SCHEMA_VERSION
from mlebench.results.target import StoreTarget


class Backend(abc.ABC):
    """A results store's database. Subclasses open and guard it (refusing foreign, newer, older
    unless migrating, corrupt and unwritable stores before anything is written), say how a write
    transaction begins and translate the driver's errors.

    Connections are opened per operation (no pool), so a store object survives ``fork`` and a
    long job holds no connection between its writes.
    """

    #: "results file" or "results database": how messages name the store
    kind = "results store"

    def __init__(self, target: StoreTarget, *, readonly: bool = False, migrating: bool = False) -> None:
        self.target = target
        self.readonly = readonly
        self.migrating = migrating  # only migrate() may open an older schema
        #: schema version found at opening (None: a store not created yet)
        self.version: int | None = None
        self._empty_engine: sa.Engine | None = None  # read-only stores not created yet

    @property
    def label(self) -> str:
        """The store as messages name it: ``results file PATH`` or ``results database URL``."""
        return f"{self.kind} {self.target}"

    @property
    @abc.abstractmethod
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine of the store's database (no pool: a connection per operation)."""

    # -- what subclasses say ---------------------------------------------------------------

    def begin(self, conn: sa.Connection, writing: bool) -> None:
        """Begin the operation's transaction on ``conn`` (SQLite takes the write lock at once)."""

    def error(self, exc: BaseException, writing: bool) -> ConfigError:
        """A one-line :class:`ConfigError` naming the store for an error the driver raised."""
        return ConfigError(f"cannot {'write' if writing else 'read'} {self.label}: {_first_line(exc)}")

    @abc.abstractmethod
    def now(self, conn: sa.Connection) -> datetime:
        """The current time on the database's clock (UTC): heartbeats are written and judged by
        one clock, whatever the hosts' clocks say."""

    # -- shared ----------------------------------------------------------------------------

    def reads_as_empty(self) -> None:
        """A store without our schema yet, opened read-only: read it as a store without runs."""
        self._empty_engine = sa.create_engine("sqlite://", poolclass=StaticPool)
        with self._empty_engine.begin() as conn:
            create_schema(conn)

    @property
    def empty(self) -> bool:
        return self._empty_engine is not None

    def version_refusal(self, version: int | None, found: str) -> ConfigError | None:
        """The refusal for a store at schema ``version`` (``found`` says what was read), or None
        when this mlebench reads it (older versions only while migrating)."""
        if version is None or version > SCHEMA_VERSION:
            return ConfigError(f"{self.label} has schema version {found}, newer than this mlebench supports "
                               f"({SCHEMA_VERSION}); upgrade mlebench")
        if version < SCHEMA_VERSION and not self.migrating:
            return ConfigError(
                f"{self.label} has schema version {version}; this mlebench reads version {SCHEMA_VERSION}. "
                f"Upgrade it with `mlebench results migrate --results {self.target.cli}` "
                f"({self.migrate_note}); it is not changed until you do")
        return None

    #: what `migrate` does to keep the original (said in the refusal above)
    migrate_note = "the original is kept beside it"

    @contextlib.contextmanager
    def transaction(self, writing: bool = False) -> Iterator[sa.Connection]:
        """One operation: a connection in a transaction, committed when the block ends and rolled
        back on any exception; the driver's errors become one line naming the store."""
        if writing and self.readonly:
            raise ConfigError(f"{self.label} was opened read-only; cannot write to it")
        engine = self._empty_engine or self.engine
        try:
            with engine.connect() as conn:
                if self._empty_engine is None:
                    self.begin(conn, writing)
                try:
                    yield conn
                except BaseException:
                    # A failed rollback (e.g. on a corrupt page, or a lost server) must not hide
                    # the original error; closing the connection rolls back anyway.
                    with contextlib.suppress(sa.exc.SQLAlchemyError):
                        conn.rollback()
                    raise
                conn.commit()
        except sa.exc.DBAPIError as exc:
            raise self.error(exc.orig if exc.orig is not None else exc, writing) from exc

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Stored JSON or compressed blobs that do not decode: the store is corrupt."""
        try:
            yield
        except (zlib.error, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.label} is corrupt: {type(exc).__name__}: {exc} (it was left as it is; "
                              f"restore it from a backup)") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
