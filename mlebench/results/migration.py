"""How a database gets to the current schema: Alembic migrations shipped in the package
(``mlebench/results/migrations/``), run on a connection the store has opened and guarded.

- A new store gets the tables of :mod:`mlebench.results.schema` and is stamped at the newest
  revision (Alembic's way to create a database; a test checks that the migrations from an
  empty database give the same tables).
- An existing store is upgraded only by :func:`upgrade` (``mlebench results migrate``). SQLite
  files written before Alembic (schema 1 and 2, marked by ``PRAGMA user_version`` alone) are
  first stamped at the revision of their version.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from mlebench.results.schema import SCHEMA_VERSION, VERSION_TABLE, metadata, revision_of

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(conn: sa.Connection | None = None) -> Config:
    """Alembic's configuration for the store's migrations, run on ``conn``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == revision_of(SCHEMA_VERSION), f"migrations end at {head}, schema.py says {SCHEMA_VERSION}"
    return head


def current_revision(conn: sa.Connection) -> str | None:
    """The revision in the store's version table (None: no version table, or it is empty)."""
    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def create_schema(conn: sa.Connection) -> None:
    """The current schema in an empty database, stamped at the newest revision (inside the
    caller's transaction)."""
    metadata.create_all(conn)
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    context.stamp(ScriptDirectory.from_config(alembic_config()), "head")


def upgrade(conn: sa.Connection, legacy_version: int | None = None) -> None:
    """Run every migration the store has not had, inside the caller's transaction.
    ``legacy_version``: a store from before Alembic at that schema version, stamped first."""
    if legacy_version is not None and current_revision(conn) is None:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        context.stamp(ScriptDirectory.from_config(alembic_config()), revision_of(legacy_version))
    command.upgrade(alembic_config(conn), "head")
