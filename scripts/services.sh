#!/usr/bin/env bash
# Starts (and stops) the servers the tests and a developer use: a PostgreSQL server for the shared
# results store and a one-node Slurm for sweeps. CI runs `eval "$(scripts/services.sh start
# postgres)"` and `scripts/services.sh start slurm` before `make test`; run the same on your
# machine to run those tests (without them they skip, saying so).
#
#   scripts/services.sh start postgres   # prints `export MLEBENCH_TEST_POSTGRES=URL` (eval it)
#   scripts/services.sh start slurm      # root only: munged, slurmctld and slurmd on this host
#   scripts/services.sh stop postgres|slurm
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

# The one-node Slurm: this host as its only node (what `slurmd -C` reports), one partition,
# proctrack/linuxproc and no cgroups, no accounting database (sacct fails; submitit copes).
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_MARK="# written by mlebench scripts/services.sh"

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

slurm_start() {
    [ "$(id -u)" = 0 ] || die "starting Slurm needs root (it runs slurmd as root); CI runs this as root"
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        || die "Slurm is not installed; run \`make system-deps\` as root (Debian's slurm-wlm and munge)"
    if [ -e "$SLURM_CONF" ] && ! grep -q "^$SLURM_MARK" "$SLURM_CONF"; then
        die "$SLURM_CONF exists and was not written by this script; not touching a real cluster's configuration"
    fi
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
    local node
    node=$(slurmd -C | head -n 1)
    cat > "$SLURM_CONF" <<CONF
$SLURM_MARK
ClusterName=mlebench
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile /etc/munge/munge.key >/dev/null 2>&1 || die "mungekey failed"
    fi
    chown -R munge: /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    pgrep -x munged >/dev/null || runuser -u munge -- munged || die "munged did not start"
    pgrep -x slurmctld >/dev/null || slurmctld || die "slurmctld did not start; see /var/log/slurm/slurmctld.log"
    pgrep -x slurmd >/dev/null || slurmd || die "slurmd did not start; see /var/log/slurm/slurmd.log"
    local i
    for i in $(seq 1 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
            echo "slurm: one node ($(hostname -s)) idle in partition debug" >&2
            return 0
        fi
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    die "the Slurm node did not become idle: $(sinfo -h 2>&1 | head -n 3)"
}

slurm_stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    echo "stopped slurmd and slurmctld" >&2
}

status() {
    local bin
    if bin=$(pg_bin 2>/dev/null) && "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 1 >/dev/null 2>&1; then
        echo "postgres: running at $PG_URL"
    else
        echo "postgres: not running (start: eval \"\$(scripts/services.sh start postgres)\")"
    fi
    if command -v sinfo >/dev/null && sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
        echo "slurm: running ($(sinfo -h -o '%P %D %t' | head -n 1))"
    else
        echo "slurm: not running (start, as root: scripts/services.sh start slurm)"
    fi
}

case "${1:-} ${2:-}" in
    "start postgres") pg_start ;;
    "stop postgres") pg_stop ;;
    "start slurm") slurm_start ;;
    "stop slurm") slurm_stop ;;
    "status "*) status ;;
    *) die "usage: scripts/services.sh start|stop postgres|slurm | status" ;;
esac
