"""A real PostgreSQL server for the store's tests: its admin URL (from ``MLEBENCH_TEST_POSTGRES``,
or the server ``scripts/services.sh start postgres`` starts), a fresh database per test, and roles.

Under CI (``CI`` set) a server that does not answer fails the test; elsewhere the test skips,
saying how to start one."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

#: where scripts/services.sh starts its server
DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:54329/postgres"
HOW_TO_START = 'needs a PostgreSQL server: run `eval "$(scripts/services.sh start postgres)"` (as CI does)'

_answered: dict[str, str | None] = {}


def admin_url() -> str:
    """The server's admin URL, or skip (fail under CI) when it does not answer."""
    url = os.environ.get("MLEBENCH_TEST_POSTGRES", DEFAULT_URL)
    if url not in _answered:
        try:
            engine = sa.create_engine(url, connect_args={"connect_timeout": 5}, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            _answered[url] = None
        except Exception as exc:  # any failure to reach it
            _answered[url] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    problem = _answered[url]
    if problem is not None:
        if "CI" in os.environ:
            pytest.fail(f"CI must reach PostgreSQL at {url}: {problem}")
        pytest.skip(f"{HOW_TO_START} ({problem})")
    return url


def admin_engine() -> sa.Engine:
    return sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def sql(url: str, statement: str, **params) -> list[tuple]:
    """Run one statement on ``url`` (autocommit) and return its rows (none for DDL)."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        result = conn.execute(sa.text(statement), params)
        return [tuple(r) for r in result] if result.returns_rows else []


def with_user(url: str, user: str, password: str | None = None) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def fresh_database() -> Iterator[str]:
    """A new empty database on the server for one test (dropped after it); yields its URL."""
    name = f"mlebench_test_{uuid.uuid4().hex[:12]}"
    engine = admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
