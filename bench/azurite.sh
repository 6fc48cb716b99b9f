#!/usr/bin/env bash
# bench.sh against Azurite (Azure's storage emulator) instead of a local directory: installs
# Azurite from npm under target/azurite and starts it on a free loopback port (scripts/azurite.sh,
# as scripts/test.sh does) with its data in a temp dir (not --inMemoryPersistence: 1 GiB blobs
# would sit in Node's heap), creates the container "bench", and runs bench/bench.sh with
# AZURE_STORAGE_CONNECTION_STRING and Azurite's CPU sampled next to blobprox's. See bench/README.md.
#
#   SIZES="64M 1G"  FORMATS="stream fernet"  RANGE_SIZE=1G  REPEAT=1   as in bench.sh
#   AZURITE_BENCH=memory.sh   run bench/memory.sh (peak memory of concurrent uploads) instead
#   AZURITE_VERSION=3.37.0
set -euo pipefail

SCRIPT_NAME=azurite
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# shellcheck source=../scripts/azurite.sh
source "$REPO_ROOT/scripts/azurite.sh"

require_tools npm node python3 curl

bench_workdir
mkdir -p "$WORK/azurite"
azurite_start 127.0.0.1 "$WORK/azurite.log" --location "$WORK/azurite" || die "Azurite did not start"
AZ_PID=$AZURITE_PID
bg_started "$AZ_PID"
log "data of Azurite in $WORK/azurite"
azurite_create_container bench || die "creating the container failed"

export AZURE_STORAGE_CONNECTION_STRING="$AZURITE_CONNECTION_STRING"
unset STORAGE_URL
status=0
SIZES="${SIZES:-64M 1G}" BENCH_WATCH="azurite=$AZ_PID" TMPDIR="$WORK" "$REPO_ROOT/bench/${AZURITE_BENCH:-bench.sh}" || status=$?
echo
echo "Azurite $AZURITE_VERSION (node $(node --version)), --location on $(df -P "$WORK" | awk 'NR == 2 {print $1}'):" \
    "peak RSS $(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$AZ_PID/status" 2>/dev/null || echo unknown)," \
    "CPU time $(awk -v t="$(cpu_ticks "$AZ_PID")" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f s", t / hz}')," \
    "data dir at the end $(du -sh "$WORK/azurite" | awk '{print $1}')"
exit "$status"
