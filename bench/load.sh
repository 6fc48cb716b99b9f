#!/usr/bin/env bash
# Mixed load: starts a fresh blobprox (local directory backend) and runs bench/load.py against it:
# CLIENTS concurrent clients doing 1 MiB uploads and downloads for DURATION seconds. See
# bench/README.md. Progress goes to stderr, the report to stdout; exits 1 when any request failed.
#
#   DURATION=60  CLIENTS=32  SIZE=1M  UPLOAD_FRACTION=0.5
#   BLOBPROX_BIN, BENCH_RUST_LOG        as in bench.sh
set -euo pipefail

SCRIPT_NAME=load
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_defaults DURATION=60 CLIENTS=32 SIZE=1M UPLOAD_FRACTION=0.5
require_positive DURATION CLIENTS
SIZE_BYTES="$(parse_size "$SIZE")"

require_tools curl python3
python3 -c 'import aiohttp' 2>/dev/null || die "load.py needs aiohttp: python3 -m pip install aiohttp"

bench_prepare
mkdir -p "$WORK/data/load"
start_server STORAGE_URL="file://$WORK/data"
read -r rss0 _ < <(mem_kb)
log "server up at $BASE (pid $SERVER_PID, RSS $(kib_to_mib "$rss0") MiB); $CLIENTS clients for $DURATION s"

status=0
echo
machine_line
echo "$BUSY_NOTE"
echo "storage: local directory on $(df -P "$WORK" | awk 'NR == 2 {print $1}'); server RSS before the load: $(kib_to_mib "$rss0") MiB"
python3 "$REPO_ROOT/bench/load.py" --url "$BASE" --container load --salt "$X_SALT" \
    --decryption-key "$X_DECRYPTION_KEY" --comparison-key "$X_COMPARISON_KEY" \
    --clients "$CLIENTS" --duration "$DURATION" --size "$SIZE_BYTES" \
    --upload-fraction "$UPLOAD_FRACTION" --server-pid "$SERVER_PID" || status=$?
if [[ -s "$SERVER_LOG" ]]; then
    echo
    echo "server log (RUST_LOG=${BENCH_RUST_LOG:-warn}), last 20 lines:"
    tail -n 20 "$SERVER_LOG" | sed 's/^/    /'
fi
stop_server
exit "$status"
