#!/usr/bin/env bash
# Starts (and stops) the servers the tests and a developer use: a PostgreSQL server for the shared
# results store. CI runs `eval "$(scripts/services.sh start postgres)"` before `make test`; run the
# same on your machine to run the PostgreSQL tests (without it they skip, saying so).
#
#   scripts/services.sh start postgres   # prints `export MLEBENCH_TEST_POSTGRES=URL` (eval it)
#   scripts/services.sh stop postgres
#   scripts/services.sh status
#
# The server is for tests and development only: its own cluster in $MLEBENCH_SERVICES
# (default /tmp/mlebench-services), listening on 127.0.0.1:$MLEBENCH_PG_PORT (default 54329),
# trusting local connections, without fsync. It is started as the `postgres` user when run as
# root (the server refuses root) and as yourself otherwise. Install the binaries with
# `make system-deps` (Debian's postgresql package).
set -euo pipefail

SERVICES=${MLEBENCH_SERVICES:-/tmp/mlebench-services}
PG_PORT=${MLEBENCH_PG_PORT:-54329}
PG_DIR=$SERVICES/postgres
PG_URL="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/postgres"

die() { echo "services.sh: $*" >&2; exit 1; }

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] || die "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl); run \`make system-deps\` as root or install Debian's postgresql package"
    echo "$dir"
}

# Run a command as the server's owner: postgres when we are root, else ourselves.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "no postgres user: install Debian's postgresql package (make system-deps)"
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    local bin
    bin=$(pg_bin)
    mkdir -p "$SERVICES"
    chmod 1777 "$SERVICES" 2>/dev/null || true
    if [ ! -s "$PG_DIR/PG_VERSION" ]; then
        mkdir -p "$PG_DIR"
        [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
        as_owner "$bin/initdb" -D "$PG_DIR" -U postgres -A trust -E UTF8 --no-locale >"$SERVICES/initdb.log" 2>&1 \
            || die "initdb failed; see $SERVICES/initdb.log"
    fi
    if ! as_owner "$bin/pg_ctl" -D "$PG_DIR" status >/dev/null 2>&1; then
        as_owner "$bin/pg_ctl" -D "$PG_DIR" -l "$PG_DIR/server.log" -w -t 60 start \
            -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            >/dev/null || die "the PostgreSQL server did not start; see $PG_DIR/server.log"
    fi
    "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 30 >/dev/null || die "the PostgreSQL server does not answer on 127.0.0.1:$PG_PORT"
    echo "export MLEBENCH_TEST_POSTGRES=$PG_URL"
}

pg_stop() {
    local bin
    bin=$(pg_bin)
    if [ -s "$PG_DIR/PG_VERSION" ]; then
        as_owner "$bin/pg_ctl" -D "$PG_DIR" -m fast -w stop >/dev/null 2>&1 || true
    fi
    echo "stopped postgres ($PG_DIR)" >&2
}

status() {
    local bin
    if bin=$(pg_bin 2>/dev/null) && "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 1 >/dev/null 2>&1; then
        echo "postgres: running at $PG_URL"
    else
        echo "postgres: not running (start: eval \"\$(scripts/services.sh start postgres)\")"
    fi
}

case "${1:-} ${2:-}" in
    "start postgres") pg_start ;;
    "stop postgres") pg_stop ;;
    "status "*) status ;;
    *) die "usage: scripts/services.sh start|stop postgres | status" ;;
esac
