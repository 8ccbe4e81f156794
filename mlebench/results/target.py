"""What ``--results`` names: a file path (an SQLite file, as always) or a database URL
(``sqlite:///PATH``, ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mlebench.errors import ConfigError

#: ``scheme://`` at the start of a value: a URL, not a path
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: drivers a PostgreSQL URL may name (psycopg 3 is what mlebench installs)
POSTGRES_DRIVERS = ("psycopg", "psycopg2", "pg8000")


@dataclass(frozen=True)
class StoreTarget:
    """A parsed ``--results``: ``path`` for an SQLite file, else ``url`` of a database server."""

    url: URL
    path: Path | None = None

    @property
    def is_file(self) -> bool:
        return self.path is not None

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def cli(self) -> str:
        """How to give this store back to ``--results`` (the password left out)."""
        return str(self)

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        return self.url.render_as_string(hide_password=True)


def parse_target(value: "str | Path | StoreTarget") -> StoreTarget:
    """``value`` as a store target; a URL of another database, or one that does not parse, is a
    :class:`ConfigError` naming it."""
    if isinstance(value, StoreTarget):
        return value
    if isinstance(value, Path) or not _URL.match(str(value)):
        path = Path(value)
        return StoreTarget(URL.create("sqlite", database=str(path)), path)
    text = str(value)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"--results {_hidden(text)!r} is not a database URL: {exc}") from exc
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise ConfigError(f"--results {text!r}: an SQLite URL must name a file (sqlite:///PATH); a store "
                              f"in memory would be lost when the command ends")
        path = Path(url.database)
        return StoreTarget(URL.create("sqlite", database=str(path)), path)
    if backend == "postgresql":
        if "+" not in url.drivername:
            url = url.set(drivername="postgresql+psycopg")  # SQLAlchemy's default would be psycopg2
        elif driver not in POSTGRES_DRIVERS:
            raise ConfigError(f"--results {_hidden(text)!r}: unknown PostgreSQL driver {driver!r}; use "
                              f"postgresql+psycopg://")
        if not url.database:
            raise ConfigError(f"--results {_hidden(text)!r} names no database (…/DBNAME at its end)")
        return StoreTarget(url)
    raise ConfigError(f"--results {_hidden(text)!r}: a results store is an SQLite file (a path or sqlite:///PATH) "
                      f"or a PostgreSQL database (postgresql+psycopg://USER@HOST:PORT/DB), not {backend!r}")


def _hidden(text: str) -> str:
    """``text`` with any password replaced by ``***`` (messages must not print it)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", text)
