"""The PostgreSQL back end's own guards, against a real server: a database holding other tables
is refused untouched, a newer schema is refused, a read-only role reads everything and is refused
for writing before a job starts, a store opened for reading cannot write, an unreachable server
and a bad URL get one line (the password never shown). The API and concurrency tests run on both
back ends in test_store.py and test_liveness.py."""

from __future__ import annotations

import re
import uuid

import pytest

from mlebench.errors import ConfigError
from mlebench.results import ResultsStore, parse_target
from mlebench.results.schema import SCHEMA_VERSION

from ..helpers import invoke
from ..postgres import sql, with_user
from .stores import begin_run, make_store, ROWS


def test_a_database_with_other_tables_is_refused_and_left_untouched(postgres_url):
    sql(postgres_url, "CREATE TABLE photos (name TEXT)")
    sql(postgres_url, "INSERT INTO photos VALUES ('cat.jpg')")
    for readonly in (False, True):
        with pytest.raises(ConfigError, match=r"is not an mlebench results database \(it holds other tables: "
                                              r"photos; and no mlebench_alembic_version\); it was left as it is"):
            ResultsStore(postgres_url, readonly=readonly)
    assert sql(postgres_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'") \
        == [("photos",)]
    assert sql(postgres_url, "SELECT name FROM photos") == [("cat.jpg",)]
    result = invoke("run", "--results", postgres_url, "--steps", "1")
    assert result.exit_code == 1 and "is not an mlebench results database" in result.output


def test_a_newer_schema_is_refused(postgres_url):
    ResultsStore(postgres_url)
    sql(postgres_url, "UPDATE mlebench_alembic_version SET version_num = '0099'")
    with pytest.raises(ConfigError, match=rf"has schema version '0099', newer than this mlebench supports \({SCHEMA_VERSION}\); "
                                          r"upgrade mlebench"):
        ResultsStore(postgres_url)


def test_an_empty_database_reads_as_a_store_without_runs_and_is_not_created_by_reading(postgres_url):
    store = ResultsStore(postgres_url, readonly=True)
    assert store.runs().empty and store.results().empty
    assert invoke("results", "list", "--results", postgres_url).output == "no runs\n"
    assert sql(postgres_url, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'") \
        == [(0,)]


def test_a_read_only_role_reads_everything_and_is_refused_for_writing(postgres_url):
    ids = make_store(postgres_url, runs=2)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    sql(postgres_url, f"CREATE ROLE {role} LOGIN PASSWORD 'secret-pw'")
    sql(postgres_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        reader_url = with_user(postgres_url, role, "secret-pw")
        store = ResultsStore(reader_url, readonly=True)
        assert set(store.runs()["id"]) == set(ids) and len(store.case_counts(ids[0])) == 3
        for args in (["results", "list"], ["results", "export"], ["report", "--format", "markdown"],
                     ["compare", ids[0], ids[1]]):
            result = invoke(*args, "--results", reader_url)
            assert result.exit_code == 0, (args, result.output)
            assert "secret-pw" not in result.output
        shown = reader_url.replace("secret-pw", "***")
        with pytest.raises(ConfigError) as refused:
            ResultsStore(reader_url)
        assert str(refused.value) == (
            f"cannot write results database {shown}: the role {role} may not INSERT table runs (reading works: "
            f"`mlebench results list --results {shown}`)")
        result = invoke("results", "reap", "--results", reader_url)
        assert result.exit_code == 1 and result.output.startswith(f"Error: cannot write results database {shown}")
    finally:
        sql(postgres_url, f"DROP OWNED BY {role}")
        sql(postgres_url, f"DROP ROLE {role}")


def test_a_store_opened_for_reading_cannot_write_even_as_superuser(postgres_url):
    writer = ResultsStore(postgres_url)
    run_id = begin_run(writer)
    reader = ResultsStore(postgres_url, readonly=True)
    with pytest.raises(ConfigError, match="was opened read-only; cannot write to it"):
        reader.finish_run(run_id, ROWS)
    import sqlalchemy as sa

    with pytest.raises(ConfigError, match=r"cannot write results database .*: cannot execute UPDATE in a read-only "
                                          r"transaction \(it was opened read-only\)"):
        with reader.backend.transaction() as conn:  # past the API's check: the server refuses
            conn.execute(sa.text("UPDATE runs SET status = 'failed'"))
    assert writer.runs().iloc[0]["status"] == "running"


def test_an_unreachable_server_is_one_line():
    url = "postgresql+psycopg://someone:hunter2@127.0.0.1:1/results"
    with pytest.raises(ConfigError, match=r"^cannot connect to results database "
                                          r"postgresql\+psycopg://someone:\*\*\*@127\.0\.0\.1:1/results: ") as info:
        ResultsStore(url)
    assert "\n" not in str(info.value) and "hunter2" not in str(info.value)
    result = invoke("results", "list", "--results", url)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "hunter2" not in result.output


@pytest.mark.parametrize("value, message", [
    ("mysql://u:pw@h/db", "a results store is an SQLite file (a path or sqlite:///PATH) or a PostgreSQL database "
                          "(postgresql+psycopg://USER@HOST:PORT/DB), not 'mysql'"),
    ("sqlite://", "an SQLite URL must name a file (sqlite:///PATH)"),
    ("postgresql+psycopg://u:pw@h:5432", "names no database"),
    ("postgresql+odbc://u@h/db", "unknown PostgreSQL driver 'odbc'"),
    ("postgresql://u:pw@h:notaport/db", "is not a database URL"),
])
def test_bad_urls_are_named(value: str, message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_target(value)
    assert "pw@" not in str(info.value)
    result = invoke("results", "list", "--results", value)
    assert result.exit_code == 2 and message in result.output and "pw@" not in result.output


def test_urls_and_paths_parse():
    assert parse_target("postgresql://u@h/db").url.drivername == "postgresql+psycopg"
    assert str(parse_target("postgresql+psycopg://u:pw@h:5/db")) == "postgresql+psycopg://u:***@h:5/db"
    file = parse_target("sqlite:///runs/r.sqlite")
    assert file.is_file and str(file.path) == "runs/r.sqlite"
    assert parse_target("sqlite:////abs/r.sqlite").path.as_posix() == "/abs/r.sqlite"
    assert parse_target("weird:name.sqlite").path.name == "weird:name.sqlite"  # a path, not a URL
