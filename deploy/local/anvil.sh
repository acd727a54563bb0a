#!/usr/bin/env bash
# Local Ethereum dev chain (Foundry's anvil) for development and tests.
#
#   deploy/local/anvil.sh install  npm-install the pinned anvil + solc (once)
#   deploy/local/anvil.sh start    start, or reuse the running chain; waits until ready
#   deploy/local/anvil.sh stop     SIGTERM (anvil then saves its state), SIGKILL after 15 s
#   deploy/local/anvil.sh status   one line; exit 0 if running, 3 if stopped
#
# Why npm: the anvil binary ships inside the npm package
# @foundry-rs/anvil-linux-amd64, and npm is reachable where Foundry's own
# installer is not. solc (solcjs) is installed into the same prefix for the
# project's contract builds: $POSFLOW_HOME/anvil/node_modules/.bin/solcjs.
#
# Chain: chain id 31337, RPC on http://127.0.0.1:$ANVIL_PORT (default 18545),
# automine, anvil's default funded test accounts. State is PERSISTENT: kept in
# $POSFLOW_HOME/anvil/state.json (loaded on start, saved on stop and every
# 10 s), so deployed contracts survive a restart just like Kafka's topics do.
# Delete that file (chain stopped) for a fresh chain.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ANVIL_NPM_PKG="@foundry-rs/anvil-linux-amd64"
ANVIL_VERSION="1.7.1"
SOLC_VERSION="0.8.37"
ANVIL_CHAIN_ID=31337
ANVIL_HOME="$POSFLOW_HOME/anvil"
ANVIL_BIN="$ANVIL_HOME/node_modules/$ANVIL_NPM_PKG/bin/anvil"
ANVIL_STATE="$ANVIL_HOME/state.json"
ANVIL_LOG="$LOG_DIR/anvil.log"
ANVIL_START_TIMEOUT="${ANVIL_START_TIMEOUT:-30}"

anvil_marker_want() { printf '%s@%s solc@%s\n' "$ANVIL_NPM_PKG" "$ANVIL_VERSION" "$SOLC_VERSION"; }

anvil_installed() {
    [[ -x "$ANVIL_BIN" && -f "$ANVIL_HOME/.installed" &&
        "$(cat "$ANVIL_HOME/.installed")" == "$(anvil_marker_want)" ]]
}

cmd_install() {
    if anvil_installed; then
        [[ "${1:-}" == --quiet ]] || info "anvil: anvil $ANVIL_VERSION and solc $SOLC_VERSION already in $ANVIL_HOME"
        return 0
    fi
    [[ "$(uname -sm)" == "Linux x86_64" ]] ||
        die "the pinned anvil package $ANVIL_NPM_PKG is for Linux x86_64 only, this is $(uname -sm)"
    ! is_running anvil || die "anvil is running from the old install; stop it first: $0 stop"
    need_cmd npm "install Node.js >= 20 with npm, e.g. apt-get install nodejs npm"
    need_cmd node "install Node.js >= 20 with npm, e.g. apt-get install nodejs npm"
    local install_log="$LOG_DIR/anvil-install.log" start=$SECONDS
    info "anvil: installing anvil $ANVIL_VERSION and solc $SOLC_VERSION from npm (once, ~10 s)..."
    mkdir -p "$ANVIL_HOME"
    rm -rf "$ANVIL_HOME/node_modules" "$ANVIL_HOME/.installed"
    # One command for both packages: without a package.json, a later
    # `npm install --no-save X` would prune whatever it did not name.
    if ! npm install --prefix "$ANVIL_HOME" --no-save --no-audit --no-fund \
        "$ANVIL_NPM_PKG@$ANVIL_VERSION" "solc@$SOLC_VERSION" >"$install_log" 2>&1; then
        show_log_tail "$install_log" 30
        die "npm install failed (log: $install_log); check that the npm registry is reachable (npm config get registry)"
    fi
    [[ -x "$ANVIL_BIN" ]] || die "npm finished but $ANVIL_BIN is missing or not executable (log: $install_log)"
    local got
    got="$("$ANVIL_BIN" --version)"
    got="${got%%$'\n'*}" # first line; no `| head` (SIGPIPE + pipefail)
    [[ "$got" == *" $ANVIL_VERSION"* ]] || die "installed anvil reports '$got', expected $ANVIL_VERSION"
    anvil_marker_want >"$ANVIL_HOME/.installed"
    info "anvil: installed anvil ${got#anvil Version: }, solcjs $("$ANVIL_HOME/node_modules/.bin/solcjs" --version) in $((SECONDS - start))s"
}

# Ready = answers JSON-RPC with our chain id (an open port could be anything).
anvil_probe() {
    local reply
    reply="$(curl -fsS -m 2 -H 'Content-Type: application/json' \
        --data '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' \
        "http://127.0.0.1:$1")" || return 1
    [[ "$reply" == *"\"result\":\"$(printf '0x%x' "$ANVIL_CHAIN_ID")\""* ]]
}

# Port from the running process's own command line.
anvil_running_port() {
    local pid
    pid="$(read_pid anvil)" || return 1
    proc_cmdline "$pid" | sed -n 's/.*--port \([0-9]*\).*/\1/p'
}

anvil_wait_ready() {
    local pid="$1" port="$2" rc=0
    wait_for --pid "$pid" "$ANVIL_START_TIMEOUT" "anvil on http://127.0.0.1:$port" anvil_probe "$port" || rc=$?
    ((rc == 0)) && return 0
    show_log_tail "$ANVIL_LOG" 30 "${ANVIL_LOG_FROM:-0}"
    if ((rc == 2)); then
        clear_pid anvil
        die "anvil exited during startup (see the log above: $ANVIL_LOG); a corrupt $ANVIL_STATE can cause this: delete it for a fresh chain"
    fi
    stop_service anvil 15 >&2
    die "anvil did not answer eth_chainId within ${ANVIL_START_TIMEOUT}s and was stopped (log: $ANVIL_LOG)"
}

cmd_start() {
    local pid running_port
    need_cmd curl "install curl: apt-get install curl"
    if is_running anvil; then
        pid="$(read_pid anvil)"
        running_port="$(anvil_running_port)"
        [[ "$running_port" == "$ANVIL_PORT" ]] ||
            die "anvil from $POSFLOW_HOME is already running on port $running_port, not ANVIL_PORT=$ANVIL_PORT; stop it first ($0 stop) or use ANVIL_PORT=$running_port"
        info "anvil: already running (pid $pid), reusing it"
        anvil_wait_ready "$pid" "$ANVIL_PORT"
        return 0
    fi
    clear_pid anvil
    if port_open "$ANVIL_PORT"; then
        if pid="$(port_pid "$ANVIL_PORT")" && pid_is_ours anvil "$pid"; then
            write_pid anvil "$pid"
            info "anvil: found our chain on port $ANVIL_PORT without a pid file (pid $pid), reusing it"
            anvil_wait_ready "$pid" "$ANVIL_PORT"
            return 0
        fi
        die "port $ANVIL_PORT is already in use by $(describe_port "$ANVIL_PORT"), not our anvil; stop that or pick a free port, e.g. ANVIL_PORT=28545 $0 start"
    fi

    cmd_install --quiet
    need_cmd setsid "install util-linux: apt-get install util-linux"
    ANVIL_LOG_FROM="$(log_size "$ANVIL_LOG")"
    # setsid + nohup: survive Ctrl-C / the terminal closing (see kafka.sh).
    (
        cd "$ANVIL_HOME"
        exec setsid nohup "$ANVIL_BIN" \
            --host 127.0.0.1 --port "$ANVIL_PORT" --chain-id "$ANVIL_CHAIN_ID" \
            --state "$ANVIL_STATE" --state-interval 10 \
            >>"$ANVIL_LOG" 2>&1 </dev/null
    ) &
    pid=$!
    write_pid anvil "$pid"
    info "anvil: started pid $pid (log: $ANVIL_LOG)"
    anvil_wait_ready "$pid" "$ANVIL_PORT"
}

cmd_stop() {
    # SIGTERM lets anvil write state.json before exiting.
    stop_service anvil 15
}

cmd_status() {
    service_status anvil "$ANVIL_PORT" anvil_running_port anvil_probe "rpc http://127.0.0.1:"
}

case "${1:-}" in
install) cmd_install ;;
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    printf 'usage: %s {install|start|stop|status}\n' "$0" >&2
    exit 2
    ;;
esac
