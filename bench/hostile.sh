#!/usr/bin/env bash
# Hostile clients at the default limits: how long a client that sends its body one byte every 4 s
# (a download's form body, an upload) holds a transfer slot, and how much peak memory N clients
# sending endless multipart part headers cost. See bench/README.md. Report on stdout.
#
#   CLIENTS=8            clients sending endless part headers at once
#   BLOBPROX_BIN, BENCH_RUST_LOG   as in bench.sh
set -euo pipefail

SCRIPT_NAME=hostile
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
set_defaults CLIENTS=8
require_positive CLIENTS
require_tools curl python3 awk

bench_prepare
mkdir -p "$WORK/data/box"
start_server STORAGE_URL="file://$WORK/data" PROD=true
headers="$(python3 -c 'import json,sys; print(json.dumps({"x-salt": sys.argv[1], "x-decryption-key": sys.argv[2], "x-comparison-key": sys.argv[3]}))' \
    "$X_SALT" "$X_DECRYPTION_KEY" "$X_COMPARISON_KEY")"

echo "# Hostile clients"
echo
echo "$(machine_line)"
echo "$BUSY_NOTE"
echo
echo "## One byte every 4 s (BODY_GRACE_SECS and BODY_MIN_RATE at their defaults unless set)"
echo
python3 "$REPO_ROOT/bench/hostile.py" trickle "$BASE" "$headers" box | sed 's/^/- /'
echo
echo "## $CLIENTS clients sending endless multipart part headers (20 MiB each at most)"
echo
read -r rss_before hwm_before < <(mem_kb)
reset_peak || log "cannot reset the peak RSS; the growth is measured from the start-up peak"
read -r _ hwm_before < <(mem_kb)
python3 "$REPO_ROOT/bench/hostile.py" headers "$BASE" "$headers" box "$CLIENTS" | sort | uniq -c | sed 's/^ */- /'
read -r rss_after hwm_after < <(mem_kb)
echo
echo "Peak RSS grew by $(kib_to_mib $((hwm_after - hwm_before))) MiB (RSS $(kib_to_mib "$rss_before") MiB before, $(kib_to_mib "$rss_after") MiB after)."
