#!/usr/bin/env bash
# Stop the local stack started by up.sh (anvil first, then Kafka), plus any
# other process that left a pid file in $POSFLOW_HOME/run. Idempotent: with
# nothing running it only says so. Data is kept (see kafka.sh / anvil.sh).
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export POSFLOW_HOME KAFKA_PORT KAFKA_CONTROLLER_PORT ANVIL_PORT

# Keep going if one stop fails: the point of down.sh is to leave nothing behind.
rc=0
"$DEPLOY_DIR/anvil.sh" stop || rc=1
"$DEPLOY_DIR/kafka.sh" stop || rc=1

# Leftovers: pid files written by anything else (app workers, a crashed
# script). stop_service signals a pid only if it is still the recorded process.
for f in "$RUN_DIR"/*.pid; do
    [[ -e "$f" ]] || continue
    stop_service "$(basename "$f" .pid)" 10 || rc=1
done
exit "$rc"
