# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables set here are used by the sourcing scripts
# Shared helpers for the local dev stack (Kafka broker + anvil chain).
# Sourced by kafka.sh, anvil.sh, up.sh and down.sh; not meant to be run.
#
# Every byte of runtime state lives under $POSFLOW_HOME (default <repo>/.local,
# git-ignored) so that `rm -rf .local` is a full reset and two checkouts (or a
# test run with POSFLOW_HOME=/tmp/x and other ports) never share state:
#   $POSFLOW_HOME/kafka/libs/            Kafka jars resolved by Maven
#   $POSFLOW_HOME/kafka/data/            KRaft metadata + topic logs
#   $POSFLOW_HOME/kafka/server.properties  generated on every start
#   $POSFLOW_HOME/anvil/                 npm prefix (anvil binary, solcjs)
#   $POSFLOW_HOME/run/NAME.pid           pid files
#   $POSFLOW_HOME/logs/NAME.log          service logs

DEPLOY_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$DEPLOY_DIR/../.." && pwd)"
POSFLOW_HOME="${POSFLOW_HOME:-$REPO_ROOT/.local}"
# Absolute path: it ends up inside command lines we later match against.
mkdir -p "$POSFLOW_HOME"
POSFLOW_HOME="$(cd "$POSFLOW_HOME" && pwd)"
RUN_DIR="$POSFLOW_HOME/run"
LOG_DIR="$POSFLOW_HOME/logs"
mkdir -p "$RUN_DIR" "$LOG_DIR"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
ANVIL_PORT="${ANVIL_PORT:-18545}"

VENV_PY="$REPO_ROOT/.venv/bin/python"

info() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# need_cmd CMD HOW-TO-INSTALL: fail early with a fix instead of a cryptic
# "command not found" halfway through a start.
need_cmd() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}

check_port_number() {
    local var="$1" val="$2"
    if ! [[ "$val" =~ ^[0-9]+$ ]] || ((val < 1 || val > 65535)); then
        die "$var='$val' is not a TCP port number (1-65535)"
    fi
}
check_port_number KAFKA_PORT "$KAFKA_PORT"
check_port_number KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
check_port_number ANVIL_PORT "$ANVIL_PORT"

# ---------------------------------------------------------------- processes

pid_file() { printf '%s/%s.pid\n' "$RUN_DIR" "$1"; }

read_pid() {
    local f
    f="$(pid_file "$1")"
    [[ -s "$f" ]] || return 1
    local pid
    pid="$(tr -dc '0-9' <"$f")"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

# Text that must appear in the command line of service NAME started from this
# POSFLOW_HOME. It contains the state path, so a broker of another checkout
# (or a recycled pid) is never mistaken for ours. Empty for unknown names.
proc_signature() {
    case "$1" in
    kafka) printf '%s\n' "$POSFLOW_HOME/kafka/server.properties" ;;
    anvil) printf '%s\n' "$POSFLOW_HOME/anvil/" ;;
    *) printf '\n' ;;
    esac
}

proc_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }

# pid_is_ours NAME PID: PID is alive and is the process NAME's pid file means.
pid_is_ours() {
    local name="$1" pid="$2" sig
    kill -0 "$pid" 2>/dev/null || return 1
    sig="$(proc_signature "$name")"
    if [[ -n "$sig" ]]; then
        [[ "$(proc_cmdline "$pid")" == *"$sig"* ]]
        return
    fi
    # Unknown service (pid file written by someone else): accept the pid only
    # if the process is at least as old as its pid file; a younger process is
    # a recycled pid, and killing it would hit an innocent bystander.
    local f age_proc age_file
    f="$(pid_file "$name")"
    age_proc="$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')"
    [[ -n "$age_proc" && -e "$f" ]] || return 1
    age_file=$(($(date +%s) - $(stat -c %Y "$f")))
    ((age_proc + 2 >= age_file))
}

# is_running NAME: pid file exists, pid alive, and it is our process.
is_running() {
    local pid
    pid="$(read_pid "$1")" || return 1
    pid_is_ours "$1" "$pid"
}

write_pid() { printf '%s\n' "$2" >"$(pid_file "$1")"; }
clear_pid() { rm -f "$(pid_file "$1")"; }

# stop_service NAME GRACE_SECONDS: SIGTERM, wait, then SIGKILL. Idempotent.
stop_service() {
    local name="$1" grace="$2" pid i
    if ! pid="$(read_pid "$name")"; then
        clear_pid "$name"
        info "$name: not running"
        return 0
    fi
    if ! pid_is_ours "$name" "$pid"; then
        # Stale pid file (crash, reboot, or recycled pid): never signal it.
        clear_pid "$name"
        info "$name: not running (removed stale pid file for pid $pid)"
        return 0
    fi
    printf '%s: stopping pid %s ' "$name" "$pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 2; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            printf ' stopped (%ss)\n' $((i / 2))
            clear_pid "$name"
            return 0
        fi
        ((i % 2)) || printf '.'
        sleep 0.5
    done
    printf ' still alive after %ss, sending SIGKILL\n' "$grace"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    clear_pid "$name"
}

# ---------------------------------------------------------------- ports

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# port_pid PORT: pid listening on PORT, if `ss` can tell us (it can for our
# own processes; it prints nothing for other users' without root).
port_pid() {
    command -v ss >/dev/null 2>&1 || return 1
    ss -ltnpH "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 | grep .
}

# describe_port PORT: "pid 123 (java, cwd /x)" or "an unknown process".
# The cwd tells another checkout's stack (<its POSFLOW_HOME>/kafka) apart.
describe_port() {
    local pid
    if pid="$(port_pid "$1")"; then
        printf 'pid %s (%s, cwd %s)\n' "$pid" "$(ps -o comm= -p "$pid")" "$(readlink "/proc/$pid/cwd" || echo '?')"
    else
        printf 'an unknown process\n'
    fi
}

# ---------------------------------------------------------------- waiting

# wait_for [--pid PID] TIMEOUT LABEL CMD [ARGS...]
# Polls CMD about once a second, printing a dot per try, until it succeeds
# (return 0), TIMEOUT seconds pass (return 1) or, with --pid, that process
# dies (return 2) -- no point waiting 60 s for a broker that crashed in 2.
wait_for() {
    local pid=""
    if [[ "${1:-}" == --pid ]]; then
        pid="$2"
        shift 2
    fi
    local timeout="$1" label="$2"
    shift 2
    local start=$SECONDS sep=''
    printf 'waiting for %s ' "$label"
    while true; do
        if "$@" >/dev/null 2>&1; then
            printf '%sready (%ss)\n' "$sep" $((SECONDS - start))
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            printf ' process %s exited\n' "$pid"
            return 2
        fi
        if ((SECONDS - start >= timeout)); then
            printf ' timed out after %ss\n' "$timeout"
            return 1
        fi
        printf '.'
        sep=' '
        sleep 1
    done
}

# log_size FILE: byte size now (0 if absent); remembered before a start so a
# failure shows only this start's lines, not an earlier run's.
log_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# show_log_tail FILE [N] [FROM_BYTE]: used on failure so the cause is on screen.
show_log_tail() {
    local f="$1" n="${2:-30}" from="${3:-0}" text
    text="$(tail -c "+$((from + 1))" "$f" 2>/dev/null | tail -n "$n")" || true
    if [[ -n "$text" ]]; then
        printf -- '----- last lines of %s -----\n%s\n-----\n' "$f" "$text" >&2
    else
        printf '(nothing new in %s)\n' "$f" >&2
    fi
}

# sha256 of a file, for "did the pinned inputs change" markers.
file_sha() { sha256sum "$1" | cut -d' ' -f1; }

# One status line for a service; returns 0 when running and 3 when stopped (the LSB convention).
# Args: name, configured port, function printing the running instance's port, readiness probe taking
# a port, and the address prefix to print before the port ("bootstrap 127.0.0.1:").
service_status() {
    local name=$1 want_port=$2 running_port_fn=$3 probe_fn=$4 label=$5
    local pid port
    if is_running "$name"; then
        pid="$(read_pid "$name")"
        port="$("$running_port_fn")"
        if "$probe_fn" "$port" 2>/dev/null; then
            info "$name: running, pid $pid, $label$port"
        else
            info "$name: running (not answering yet), pid $pid, $label$port"
        fi
        return 0
    fi
    if port_open "$want_port"; then
        if pid="$(port_pid "$want_port")" && pid_is_ours "$name" "$pid"; then
            write_pid "$name" "$pid" # lost pid file: adopt, as start would
            info "$name: running, pid $pid, $label$want_port"
            return 0
        fi
        info "$name: stopped, but 127.0.0.1:$want_port is in use by $(describe_port "$want_port")"
        return 3
    fi
    info "$name: stopped, $label$want_port when started"
    return 3
}
