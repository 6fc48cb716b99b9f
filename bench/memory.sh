#!/usr/bin/env bash
# The server's peak memory (VmHWM) and throughput for one large upload, then for many concurrent
# uploads: the figures that MAX_BUFFER_BYTES bounds. Meant for Azure's part sizes, so run it
# through azurite.sh, which starts Azurite and the container "bench" (see bench/README.md):
#
#   AZURITE_BENCH=memory.sh bench/azurite.sh
#
#   SINGLE_SIZE=256M           the one upload alone
#   UPLOADS=16 EACH_SIZE=64M   the concurrent uploads
#   BLOBPROX_BIN=...           use this binary instead of building target/release/blobprox
# Every other variable in the environment (MAX_BUFFER_BYTES, ...) reaches the server unchanged.
set -euo pipefail

SCRIPT_NAME=memory
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_defaults SINGLE_SIZE=256M UPLOADS=16 EACH_SIZE=64M
require_positive UPLOADS
require_tools curl python3 head awk

bench_prepare
start_server
fetch_recipients "$WORK/recipients.json"
reset_peak || die "cannot reset the peak RSS (/proc/PID/clear_refs)"

# uploads LABEL COUNT SIZE: COUNT uploads of SIZE at once; prints one report row.
uploads() {
    local label="$1" count="$2" size="$3" bytes t0 t1 i ok rss hwm clients=()
    bytes="$(parse_size "$size")"
    head -c "$bytes" /dev/urandom >"$WORK/file"
    reset_peak || die "cannot reset the peak RSS"
    t0="$(now)"
    for i in $(seq "$count"); do
        curl -s -o /dev/null -w '%{http_code}\n' "${AUTH[@]}" -F "public-keys=<$WORK/recipients.json" \
            -F overwrite=true -F "file=@$WORK/file" "$BASE/upload/bench/memory-$label-$i" >"$WORK/code.$i" &
        clients+=($!)
    done
    wait "${clients[@]}"
    t1="$(now)"
    read -r rss hwm < <(mem_kb)
    ok="$(cat "$WORK"/code.* | grep -c '^200$' || true)"
    rm -f "$WORK"/code.*
    echo "| $label | $count × $size | $ok | $(kib_to_mib "$hwm") MiB | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s | $(mbps $((bytes * count)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')") |"
}

read -r rss _ < <(mem_kb)
# One small upload first: the container's store, the auth cache and the runtime's threads are
# set up once per process, and are not what the budget bounds.
uploads warm-up 1 1M >/dev/null
read -r warm _ < <(mem_kb)
echo "$(machine_line)"
echo "$BUSY_NOTE"
echo "MAX_BUFFER_BYTES=${MAX_BUFFER_BYTES:-default}; RSS at start $(kib_to_mib "$rss") MiB, after a 1 MiB warm-up upload $(kib_to_mib "$warm") MiB"
echo
echo "| run | uploads | answered 200 | peak RSS | time | MB/s (all) |"
echo "|---|---|---|---|---|---|"
uploads single 1 "$SINGLE_SIZE"
uploads concurrent "$UPLOADS" "$EACH_SIZE"
