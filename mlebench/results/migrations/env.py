"""Alembic environment of the results store. mlebench runs it on a connection it has opened and
guarded (``config.attributes["connection"]``, inside the caller's transaction): see
:mod:`mlebench.results.migration`. It never opens a database of its own."""

from alembic import context

from mlebench.results.schema import VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the results store's migrations with `mlebench results migrate --results TARGET`")
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
