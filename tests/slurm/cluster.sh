#!/usr/bin/env bash
# A single-node SLURM on localhost for the cluster tests: munged, slurmctld and slurmd from the Debian
# packages (slurmctld slurmd slurm-client munge), run as root, no systemd, no cgroups, no accounting.
#
#   tests/slurm/cluster.sh up       start (or keep) the cluster; waits until the node is idle
#   tests/slurm/cluster.sh down     cancel every job, stop the daemons (state is kept: job ids keep growing)
#   tests/slurm/cluster.sh status   daemons, node and queue; exit 0 only when the cluster answers
#
# Everything (config, munge key and socket, state, logs) lives in $XSAMPLE_SLURM_DIR
# (default /tmp/xsample-slurm); nothing under /etc is touched. Clients find the cluster through
# SLURM_CONF:   source "$XSAMPLE_SLURM_DIR/env"   (or: export SLURM_CONF=$XSAMPLE_SLURM_DIR/etc/slurm.conf)
#
# Environment: XSAMPLE_SLURM_DIR, XSAMPLE_SLURM_PARTITION (default debug),
# XSAMPLE_SLURM_PORT (slurmctld port; slurmd uses the next one; must be free), XSAMPLE_SLURM_UP_TIMEOUT_S (default 60).
# Without XSAMPLE_SLURM_PORT, 'up' takes the first free pair of ports from 6817 on, so a cluster node that
# already runs SLURM (or a second test cluster) keeps its ports. Only daemons this script started (their
# pid files in $XSAMPLE_SLURM_DIR, a controller whose state is in it) are ever queried, cancelled or stopped.
set -euo pipefail

STATE_DIR=${XSAMPLE_SLURM_DIR:-/tmp/xsample-slurm}
PARTITION=${XSAMPLE_SLURM_PARTITION:-debug}
DEFAULT_CTLD_PORT=6817
PORT_SEARCH_PAIRS=100
UP_TIMEOUT_S=${XSAMPLE_SLURM_UP_TIMEOUT_S:-60}

ETC_DIR=$STATE_DIR/etc
CONF=$ETC_DIR/slurm.conf
MUNGE_DIR=$STATE_DIR/munge
MUNGE_KEY=$MUNGE_DIR/munge.key
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
LOG_DIR=$STATE_DIR/log
RUN_DIR=$STATE_DIR/run
MUNGED_PID=$RUN_DIR/munged.pid
CTLD_PID=$RUN_DIR/slurmctld.pid
SLURMD_PID=$RUN_DIR/slurmd.pid

export SLURM_CONF=$CONF

die() {
    echo "cluster.sh: error: $*" >&2
    exit 1
}

log() { echo "cluster.sh: $*" >&2; }

require_prerequisites() {
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd launches jobs as their owner); try: sudo $0 $*"
    local missing=""
    for binary in munged munge unmunge slurmctld slurmd sinfo squeue scontrol sbatch scancel; do
        command -v "$binary" >/dev/null 2>&1 || missing="$missing $binary"
    done
    [ -z "$missing" ] || die "missing programs:$missing; install the Debian packages: apt-get install slurmctld slurmd slurm-client munge"
}

# The pid in a pid file, if that process is alive and is the expected program.
running_pid() {
    local pid_file=$1 program=$2 pid
    [ -s "$pid_file" ] || return 1
    pid=$(cat "$pid_file")
    [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || return 1
    echo "$pid"
}

stop_daemon() {
    local pid_file=$1 program=$2 pid
    pid=$(running_pid "$pid_file" "$program") || { rm -f "$pid_file"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        [ -d "/proc/$pid" ] || { rm -f "$pid_file"; log "stopped $program (pid $pid)"; return 0; }
        sleep 0.1
    done
    log "$program (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pid_file"
}

munge_answers() {
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1
}

# Our controller answers: a controller on another cluster's port would not keep its state in STATE_DIR.
controller_answers() {
    scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    scontrol show config 2>/dev/null | grep -Eq "^StateSaveLocation *= *$STATE_DIR/slurmctld\$"
}

# Whether something listens on a TCP port (any address).
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htln "sport = :$port" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

port_owner() {
    local owner
    owner=$(ss -Htlnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n 1 \
        | sed -e 's/users:(("\([^"]*\)",pid=\([0-9]*\)/\1, pid \2/') || true
    echo "${owner:-another program}"
}

# CTLD_PORT and SLURMD_PORT: the running cluster's, XSAMPLE_SLURM_PORT (checked free), or the first free pair.
choose_ports() {
    if running_pid "$CTLD_PID" slurmctld >/dev/null && [ -f "$CONF" ]; then
        CTLD_PORT=$(sed -n 's/^SlurmctldPort=//p' "$CONF")
        SLURMD_PORT=$(sed -n 's/^SlurmdPort=//p' "$CONF")
        if [ -z "${XSAMPLE_SLURM_PORT:-}" ] || [ "$XSAMPLE_SLURM_PORT" = "$CTLD_PORT" ]; then
            return 0
        fi
        stop_daemon "$SLURMD_PID" slurmd  # the requested port differs: restart on it
        stop_daemon "$CTLD_PID" slurmctld
    fi
    local port
    if [ -n "${XSAMPLE_SLURM_PORT:-}" ]; then
        CTLD_PORT=$XSAMPLE_SLURM_PORT
        SLURMD_PORT=$((CTLD_PORT + 1))
        for port in "$CTLD_PORT" "$SLURMD_PORT"; do
            port_in_use "$port" && die "port $port (XSAMPLE_SLURM_PORT=$CTLD_PORT needs it and the next one) is taken by $(port_owner "$port"); choose another, e.g. XSAMPLE_SLURM_PORT=$(first_free_port_pair $((CTLD_PORT + 2))), or unset XSAMPLE_SLURM_PORT to pick free ports"
        done
        return 0
    fi
    CTLD_PORT=$(first_free_port_pair "$DEFAULT_CTLD_PORT")
    SLURMD_PORT=$((CTLD_PORT + 1))
    [ "$CTLD_PORT" = "$DEFAULT_CTLD_PORT" ] \
        || log "ports $DEFAULT_CTLD_PORT/$((DEFAULT_CTLD_PORT + 1)) are taken (another SLURM?); using $CTLD_PORT/$SLURMD_PORT"
}

first_free_port_pair() {
    local port=$1 tries
    for tries in $(seq 1 "$PORT_SEARCH_PAIRS"); do
        if ! port_in_use "$port" && ! port_in_use $((port + 1)); then
            echo "$port"
            return 0
        fi
        port=$((port + 2))
    done
    die "no two free consecutive ports among $1..$port; set XSAMPLE_SLURM_PORT to a free port"
}

node_name() { hostname -s; }

node_state() {
    sinfo --noheader --nodes="$(node_name)" --format=%T 2>/dev/null | head -n 1
}

start_munge() {
    if running_pid "$MUNGED_PID" munged >/dev/null && munge_answers; then
        return 0
    fi
    mkdir -p "$MUNGE_DIR"
    # munged refuses a socket directory that others can write to.
    chmod 0755 "$STATE_DIR" "$MUNGE_DIR"
    if [ ! -s "$MUNGE_KEY" ]; then
        log "generating munge key $MUNGE_KEY"
        (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none)
    fi
    chmod 0400 "$MUNGE_KEY"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --key-file="$MUNGE_KEY" --socket="$MUNGE_SOCKET" --pid-file="$MUNGED_PID" \
        --log-file="$LOG_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed" \
        || die "munged failed to start; see $LOG_DIR/munged.log"
    for _ in $(seq 1 50); do
        munge_answers && return 0
        sleep 0.1
    done
    die "munged does not answer on $MUNGE_SOCKET; see $LOG_DIR/munged.log"
}

# Node hardware as slurmd itself detects it, so the node is never drained for a mismatch.
node_hardware() {
    slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //'
}

write_config() {
    local node hardware cpus memory_mb default_mem_mb new_conf
    node=$(node_name)
    hardware=$(node_hardware) || die "'slurmd -C' cannot detect this node's hardware"
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")
    memory_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")
    [ -n "$cpus" ] && [ -n "$memory_mb" ] || die "cannot read CPUs/RealMemory from 'slurmd -C': $hardware"
    # Jobs that do not ask for memory get a share per CPU instead of the whole node.
    default_mem_mb=$((memory_mb / cpus))
    # Job ids of a fresh cluster start from the clock, not 1: submitit keys its folders by job id, and a
    # reused id could make a relaunched sweep read a previous cluster's result files.
    if [ ! -s "$STATE_DIR/first_job_id" ]; then
        echo $(($(date +%s) % 50000000 + 1)) >"$STATE_DIR/first_job_id"
    fi
    new_conf=$(mktemp "$ETC_DIR/slurm.conf.XXXXXX")
    cat >"$new_conf" <<EOF
# Generated by tests/slurm/cluster.sh; overwritten by every 'up'.
ClusterName=xsample
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also delays the restart of a requeued job (default 120 s).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: track processes by /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$default_mem_mb
JobRequeue=1
MaxArraySize=10001
MaxJobCount=100000
FirstJobId=$(cat "$STATE_DIR/first_job_id")
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
Waittime=0
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 0644 "$new_conf"
    if [ -f "$CONF" ] && cmp -s "$new_conf" "$CONF"; then
        rm -f "$new_conf"
    else
        mv -f "$new_conf" "$CONF"
        CONFIG_CHANGED=1
    fi
}

write_env_file() {
    local env_file=$STATE_DIR/env tmp
    tmp=$(mktemp "$STATE_DIR/env.XXXXXX")
    printf 'export SLURM_CONF=%q\n' "$CONF" >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$env_file"
}

wait_for_node() {
    local deadline=$((SECONDS + UP_TIMEOUT_S)) state=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        state=$(node_state || true)
        case "$state" in
            idle | mixed | allocated | completing) return 0 ;;
            down* | drain* | drained*)
                # A restarted slurmd can leave the node marked down; it is healthy if it registered.
                scontrol update NodeName="$(node_name)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    log "node $(node_name) is '${state:-unknown}' after ${UP_TIMEOUT_S} s; last log lines:"
    tail -n 15 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    die "cluster did not become ready (raise XSAMPLE_SLURM_UP_TIMEOUT_S or see $LOG_DIR)"
}

cmd_up() {
    require_prerequisites up
    mkdir -p "$ETC_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    choose_ports
    start_munge
    CONFIG_CHANGED=0
    write_config
    if [ "$CONFIG_CHANGED" = 1 ]; then
        # A changed config needs fresh daemons.
        stop_daemon "$SLURMD_PID" slurmd
        stop_daemon "$CTLD_PID" slurmctld
    fi
    write_env_file
    if ! running_pid "$CTLD_PID" slurmctld >/dev/null; then
        slurmctld -f "$CONF" || die "slurmctld failed to start; see $LOG_DIR/slurmctld.log"
    fi
    local deadline=$((SECONDS + UP_TIMEOUT_S))
    until controller_answers; do
        if ! running_pid "$CTLD_PID" slurmctld >/dev/null && [ "$SECONDS" -gt $((deadline - UP_TIMEOUT_S + 5)) ]; then
            tail -n 15 "$LOG_DIR/slurmctld.log" >&2 || true
            die "slurmctld exited (port $CTLD_PORT taken? see $LOG_DIR/slurmctld.log)"
        fi
        [ "$SECONDS" -lt "$deadline" ] || {
            tail -n 15 "$LOG_DIR/slurmctld.log" >&2 || true
            die "slurmctld does not answer after ${UP_TIMEOUT_S} s; see $LOG_DIR/slurmctld.log"
        }
        sleep 0.5
    done
    if ! running_pid "$SLURMD_PID" slurmd >/dev/null; then
        slurmd -f "$CONF" -N "$(node_name)" || die "slurmd failed to start; see $LOG_DIR/slurmd.log"
    fi
    wait_for_node
    log "up: node $(node_name), partition $PARTITION, ports $CTLD_PORT/$SLURMD_PORT; clients need: export SLURM_CONF=$CONF (or: source $STATE_DIR/env)"
}

cmd_down() {
    require_prerequisites down
    if running_pid "$CTLD_PID" slurmctld >/dev/null && controller_answers; then
        # Stopping slurmd would leave running jobs' processes behind, so end the jobs first.
        scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while squeue --noheader --format=%i --partition="$PARTITION" 2>/dev/null | grep -q . \
            && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.5
        done
    fi
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
    stop_daemon "$MUNGED_PID" munged
    log "down (state kept in $STATE_DIR)"
}

cmd_status() {
    local healthy=0 pid
    for daemon in munged:$MUNGED_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        if pid=$(running_pid "${daemon#*:}" "${daemon%%:*}"); then
            echo "${daemon%%:*}: running (pid $pid)"
        else
            echo "${daemon%%:*}: not running"
            healthy=1
        fi
    done
    if [ "$healthy" = 0 ] && controller_answers; then
        echo "SLURM_CONF=$CONF"
        sinfo
        squeue
    else
        echo "cluster is not up (start it with: $0 up)"
        healthy=1
    fi
    return "$healthy"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status   (state in \$XSAMPLE_SLURM_DIR, default /tmp/xsample-slurm)" >&2
        exit 2
        ;;
esac
