#!/usr/bin/env bash
# Bring up the whole local stack: Kafka broker, anvil chain, posflow topics.
# Idempotent: services already running from this POSFLOW_HOME are reused, so
# running it again is cheap and safe. Stop everything with deploy/local/down.sh.
#
# Environment (all optional): POSFLOW_HOME (state root, default <repo>/.local),
# KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093), ANVIL_PORT (18545).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The child scripts must see the same home and ports, defaulted or not.
export POSFLOW_HOME KAFKA_PORT KAFKA_CONTROLLER_PORT ANVIL_PORT

on_error() {
    warn "up.sh failed; services it already started are left running (deploy/local/down.sh stops them)"
}
trap on_error ERR

"$DEPLOY_DIR/kafka.sh" start
"$DEPLOY_DIR/anvil.sh" start

# Topics are declared in Python (streams.topics) so the app and this stack
# cannot disagree on names, partitions or configs. Exit 3 = module absent.
TOPICS_PROBE='
import importlib.util, sys
try:
    spec = importlib.util.find_spec("streams.topics")
except ModuleNotFoundError as exc:
    if exc.name in ("streams", "streams.topics"):
        sys.exit(3)
    raise
sys.exit(0 if spec else 3)
'
bootstrap="127.0.0.1:$KAFKA_PORT"
if [[ ! -x "$VENV_PY" ]]; then
    info "topics: skipped, no $VENV_PY (create the venv, then re-run up.sh to create the topics)"
else
    rc=0
    (cd "$REPO_ROOT" && "$VENV_PY" -c "$TOPICS_PROBE") || rc=$?
    case "$rc" in
    0)
        info "topics: creating missing topics on $bootstrap"
        (cd "$REPO_ROOT" && "$VENV_PY" -m streams.topics create --bootstrap "$bootstrap") ||
            die "topic creation failed: $VENV_PY -m streams.topics create --bootstrap $bootstrap"
        ;;
    3) info "topics: skipped, module streams.topics not found in $REPO_ROOT (topics will be auto-created on first use)" ;;
    *) die "importing the streams package failed (traceback above); fix it, then re-run up.sh" ;;
    esac
fi

row() { printf '%-8s %-24s %-8s %s\n' "$@"; }
printf '\n'
row service address pid log
row kafka "$bootstrap" "$(read_pid kafka || echo -)" "$LOG_DIR/kafka.log"
row anvil "http://127.0.0.1:$ANVIL_PORT" "$(read_pid anvil || echo -)" "$LOG_DIR/anvil.log"
printf '\nstate: %s   stop: deploy/local/down.sh\n' "$POSFLOW_HOME"
