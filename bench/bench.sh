#!/usr/bin/env bash
# Measures blobprox upload/download throughput, the server's peak memory and CPU, with curl as
# the client, for both blob formats; then the latency of a small range read at the end of a large
# stream-format blob. See bench/README.md. Progress goes to stderr, the report to stdout.
#
#   SIZES="64M 1G 4G"      file sizes (suffix K/M/G = KiB/MiB/GiB; a bare number is bytes)
#   FORMATS="stream fernet" blob formats, one server start each (BLOB_FORMAT=x alone also works)
#   REPEAT=1               transfers per size, format and direction; the best time is reported
#   RANGE_SIZE=1G          blob size for the range test (0 = no range test)
#   RANGE_REQUESTS=50      timed range requests;  RANGE_TAIL=1024: "Range: bytes=-RANGE_TAIL"
#   STORAGE_URL=...        storage (default: file://<temp dir>/data); container "bench" must exist
#   BLOBPROX_BIN=...       use this binary instead of building target/release/blobprox
#   BENCH_RUST_LOG=warn    RUST_LOG of the server
#   BENCH_WATCH="name=PID" another process whose CPU is sampled during transfers (azurite.sh sets it)
# Every other variable in the environment reaches the server unchanged.
set -euo pipefail

SCRIPT_NAME=bench
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SCRIPT_DIR="$REPO_ROOT/bench"

set_defaults "SIZES=64M 1G 4G" "FORMATS=${BLOB_FORMAT:-stream fernet}" REPEAT=1 RANGE_SIZE=1G \
    RANGE_REQUESTS=50 RANGE_TAIL=1024 CURL_MAX_TIME=3600 BENCH_WATCH=
CONTAINER="bench"
VERIFY_MAX_BYTES=$((64 * 1024 * 1024)) # sha256-compare downloads up to this size

require_tools curl python3 sha256sum head tail cmp awk df
require_positive REPEAT RANGE_REQUESTS RANGE_TAIL
for s in $SIZES; do parse_size "$s" >/dev/null; done
[[ -n "${SIZES// /}" ]] || die "SIZES is empty"
for f in $FORMATS; do [[ "$f" == stream || "$f" == fernet ]] || die "unknown format '$f' in FORMATS (stream | fernet)"; done
[[ -n "${FORMATS// /}" ]] || die "FORMATS is empty"
RANGE_BYTES=0
[[ "$RANGE_SIZE" == 0 ]] || RANGE_BYTES="$(parse_size "$RANGE_SIZE")"
((RANGE_BYTES == 0 || RANGE_BYTES >= RANGE_TAIL)) || die "RANGE_SIZE must be at least RANGE_TAIL bytes"
WATCH_NAME="" WATCH_PID=""
if [[ -n "$BENCH_WATCH" ]]; then
    [[ "$BENCH_WATCH" =~ ^([A-Za-z0-9_-]+)=([0-9]+)$ ]] || die "BENCH_WATCH must be NAME=PID, not '$BENCH_WATCH'"
    WATCH_NAME="${BASH_REMATCH[1]}" WATCH_PID="${BASH_REMATCH[2]}"
fi

bench_prepare
DATA="$WORK/data"
mkdir -p "$DATA/$CONTAINER"
LOCAL_STORAGE=0
if [[ -z "${STORAGE_URL:-}" && -z "${AZURE_STORAGE_CONNECTION_STRING:-}" ]]; then
    STORAGE_URL="file://$DATA"
    LOCAL_STORAGE=1
fi
if [[ -n "${STORAGE_URL:-}" ]]; then
    STORAGE_DESC="$STORAGE_URL"
else
    STORAGE_DESC="Azure, $(sed -E 's/AccountKey=[^;]*/AccountKey=…/; s/;+$//' <<<"$AZURE_STORAGE_CONNECTION_STRING")"
fi
PK_FILE="$WORK/public-keys.json"
RESTART_PER_TRANSFER=0
IDLE_RSS_KB=""

# Starts a server that writes FORMAT, checks the peak-RSS reset, fetches the recipients map.
start_for_format() {
    local format="$1"
    stop_server
    if [[ -n "${STORAGE_URL:-}" ]]; then
        start_server STORAGE_URL="$STORAGE_URL" BLOB_FORMAT="$format"
    else
        start_server BLOB_FORMAT="$format"
    fi
    if [[ -z "$IDLE_RSS_KB" ]]; then
        read -r IDLE_RSS_KB _ < <(mem_kb)
        if reset_peak; then
            log "server up at $BASE (pid $SERVER_PID); peak RSS reset via /proc/PID/clear_refs works"
        else
            RESTART_PER_TRANSFER=1
            log "server up at $BASE; /proc/PID/clear_refs does not reset VmHWM here, restarting the server before each transfer"
        fi
    fi
    fetch_recipients "$PK_FILE"
    CURRENT_FORMAT="$format"
}

# Before a measured transfer: no dirty pages left from writing the source file or the previous
# transfer (their writeback would slow this one), and a clean peak-RSS counter.
prepare_transfer() {
    sync
    if ((RESTART_PER_TRANSFER)); then
        start_for_format "$CURRENT_FORMAT"
    else
        reset_peak || die "resetting VmHWM failed"
    fi
}

# sampled_curl OUTFILE CURL-ARGS...: runs curl under run_sampled.py; its -w output goes to
# OUTFILE; sets CPU_SERVER, CPU_CLIENT, CPU_WATCH ("avg/max" strings; client is avg only).
sampled_curl() {
    local outfile="$1"
    shift
    local watch=(--watch "server=$SERVER_PID")
    [[ -n "$WATCH_PID" ]] && watch+=(--watch "$WATCH_NAME=$WATCH_PID")
    python3 "$SCRIPT_DIR/run_sampled.py" --report "$WORK/cpu.txt" "${watch[@]}" -- \
        curl -sS --max-time "$CURL_MAX_TIME" "$@" >"$outfile" || return 1
    CPU_CLIENT="$(awk '$1 == "client" {print $2}' "$WORK/cpu.txt")"
    CPU_SERVER="$(awk '$1 == "server" {print $2 "/" $3}' "$WORK/cpu.txt")"
    CPU_WATCH=""
    [[ -n "$WATCH_PID" ]] && CPU_WATCH="$(awk -v n="$WATCH_NAME" '$1 == n {print $2 "/" $3}' "$WORK/cpu.txt")"
    return 0
}

# Largest number of bytes one size needs on disk at once: the source file, the stored blob of the
# previous repeat (Fernet: 4/3 of the plaintext) and the staging copy of the new one, plus 512 MiB.
disk_needed() { awk -v b="$1" 'BEGIN {printf "%.0f", b * (1 + 2 * 1.34) + 512 * 1048576}'; }

# ---------------------------------------------------------------- range test
RANGE_RESULT=""
# range_test BLOB WRAPPED_KEY SIZE TAIL_FILE: RANGE_REQUESTS timed "Range: bytes=-RANGE_TAIL" GETs.
range_test() {
    local blob="$1" wrapped="$2" bytes="$3" tail_file="$4"
    local want_first=$((bytes - RANGE_TAIL)) headers="$WORK/range-headers.txt" body="$WORK/range-body.bin"
    local want_cr="bytes $want_first-$((bytes - 1))/$bytes"
    log "[range] $RANGE_REQUESTS x GET Range: bytes=-$RANGE_TAIL on a $bytes-byte $CURRENT_FORMAT blob"
    # One untimed request to check the headers.
    local code
    code="$(curl -sS -D "$headers" -o "$body" -w '%{http_code}' "${AUTH[@]}" -H "x-blob-key: $wrapped" \
        -H "Range: bytes=-$RANGE_TAIL" "$BASE/download/$CONTAINER/$blob")" || die "[range] curl failed"
    [[ "$code" == 206 ]] || die "[range] answered HTTP $code, want 206: $(head -c 500 "$body")"
    local got_cr
    got_cr="$(awk -F': *' 'tolower($1) == "content-range" {sub(/\r$/, "", $2); print $2}' "$headers")"
    [[ "$got_cr" == "$want_cr" ]] || die "[range] Content-Range '$got_cr', want '$want_cr'"
    cmp -s "$body" "$tail_file" || die "[range] body differs from the last $RANGE_TAIL bytes of the file"
    local times=() i out size secs
    for i in $(seq "$RANGE_REQUESTS"); do
        rm -f "$body"
        out="$(curl -sS -o "$body" -w '%{http_code} %{size_download} %{time_total}' "${AUTH[@]}" \
            -H "x-blob-key: $wrapped" -H "Range: bytes=-$RANGE_TAIL" "$BASE/download/$CONTAINER/$blob")" ||
            die "[range] request $i: curl failed"
        read -r code size secs <<<"$out"
        [[ "$code" == 206 ]] || die "[range] request $i answered HTTP $code, want 206"
        [[ "$size" == "$RANGE_TAIL" ]] || die "[range] request $i returned $size bytes, want $RANGE_TAIL"
        cmp -s "$body" "$tail_file" || die "[range] request $i: body differs from the file's last $RANGE_TAIL bytes"
        times+=("$secs")
    done
    RANGE_RESULT="$(python3 - "$bytes" "$RANGE_TAIL" "$RANGE_SIZE" "${times[@]}" <<'EOF'
import math, statistics, sys
size, tail, ts = int(sys.argv[1]), int(sys.argv[2]), sorted(float(t) * 1000 for t in sys.argv[4:])
p95 = ts[math.ceil(0.95 * len(ts)) - 1]
print(f"| {sys.argv[3]} stream ({size} bytes) | bytes=-{tail} | {len(ts)} | {statistics.median(ts):.2f} | {p95:.2f} | {ts[0]:.2f} | {ts[-1]:.2f} |")
EOF
)"
    log "[range] all $RANGE_REQUESTS answers were 206 with the right $RANGE_TAIL bytes and Content-Range: $want_cr"
}

# ---------------------------------------------------------------- transfers
ROWS=()
CPU_ROWS=()
RANGE_DONE=0

# measure SIZE_TEXT BYTES SRC WANT_SHA: uploads and downloads SRC with the current server.
measure() {
    local size_text="$1" bytes="$2" src="$3" want_sha="$4"
    local blob="file-$size_text.bin" run out code secs got ttfb rss_before hwm
    local best_up="" peak_up_kb=0 wrapped="" cpu_up="" best_down="" peak_down_kb=0 cpu_down="" ttfb_best=""
    local tag="[$size_text $CURRENT_FORMAT]"
    for run in $(seq "$REPEAT"); do
        prepare_transfer
        read -r rss_before _ < <(mem_kb)
        sampled_curl "$WORK/out.txt" -o "$WORK/resp.json" -w '%{http_code} %{time_total}\n' \
            "${AUTH[@]}" -F "public-keys=<$PK_FILE" -F "file=@$src" -F overwrite=true \
            "$BASE/upload/$CONTAINER/$blob" || die "$tag upload: curl failed (server log: $(tail -n 5 "$SERVER_LOG"))"
        read -r code secs <"$WORK/out.txt"
        [[ "$code" == 200 ]] || die "$tag upload answered HTTP $code: $(head -c 2000 "$WORK/resp.json")"
        read -r _ hwm < <(mem_kb)
        wrapped="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["bench"])' "$WORK/resp.json")" ||
            die "$tag no decryption_keys.bench in the upload answer: $(head -c 2000 "$WORK/resp.json")"
        ((hwm > peak_up_kb)) && peak_up_kb=$hwm
        [[ "$(min_time "$best_up" "$secs")" == "$secs" ]] && cpu_up="$CPU_SERVER $CPU_CLIENT $CPU_WATCH"
        best_up="$(min_time "$best_up" "$secs")"
        log "$tag upload $run/$REPEAT: ${secs}s, $(mbps "$bytes" "$secs") MB/s, RSS before $(kib_to_mib "$rss_before") MiB, peak $(kib_to_mib "$hwm") MiB; CPU % avg/max: server $CPU_SERVER, curl $CPU_CLIENT${WATCH_NAME:+, $WATCH_NAME $CPU_WATCH}"
    done

    # What was stored, when the storage is a local directory.
    local stored="$DATA/$CONTAINER/$blob" format="$CURRENT_FORMAT" stored_bytes
    if ((LOCAL_STORAGE)) && [[ -f "$stored" ]]; then
        if [[ "$(head -c 6 "$stored")" == "gAAAAA" ]]; then format="fernet"; else format="stream"; fi
        [[ "$format" == "$CURRENT_FORMAT" ]] || die "$tag the server wrote $format, want $CURRENT_FORMAT"
        stored_bytes="$(stat -c %s "$stored")"
        log "$tag stored as $format, $stored_bytes bytes ($(awk -v s="$stored_bytes" -v b="$bytes" 'BEGIN {printf "%.3f", s / b}')x the plaintext)"
    fi

    if [[ -n "$want_sha" ]]; then
        local copy="$WORK/download.bin" got_sha
        code="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$copy" -w '%{http_code}' "${AUTH[@]}" -H "x-blob-key: $wrapped" \
            "$BASE/download/$CONTAINER/$blob")" || die "$tag verification download: curl failed"
        [[ "$code" == 200 ]] || die "$tag verification download answered HTTP $code: $(head -c 2000 "$copy")"
        got_sha="$(sha256sum "$copy" | awk '{print $1}')"
        rm -f "$copy"
        [[ "$got_sha" == "$want_sha" ]] || die "$tag downloaded content differs from the upload (sha256 $got_sha, want $want_sha)"
        log "$tag download verified (sha256 matches)"
    fi

    for run in $(seq "$REPEAT"); do
        prepare_transfer
        read -r rss_before _ < <(mem_kb)
        sampled_curl "$WORK/out.txt" -o /dev/null -w '%{http_code} %{time_total} %{size_download} %{time_starttransfer}\n' \
            "${AUTH[@]}" -H "x-blob-key: $wrapped" "$BASE/download/$CONTAINER/$blob" ||
            die "$tag download: curl failed (server log: $(tail -n 5 "$SERVER_LOG"))"
        read -r code secs got ttfb <"$WORK/out.txt"
        [[ "$code" == 200 ]] || die "$tag download answered HTTP $code"
        [[ "$got" == "$bytes" ]] || die "$tag download returned $got bytes, want $bytes"
        read -r _ hwm < <(mem_kb)
        ((hwm > peak_down_kb)) && peak_down_kb=$hwm
        if [[ "$(min_time "$best_down" "$secs")" == "$secs" ]]; then
            cpu_down="$CPU_SERVER $CPU_CLIENT $CPU_WATCH"
            ttfb_best="$ttfb"
        fi
        best_down="$(min_time "$best_down" "$secs")"
        log "$tag download $run/$REPEAT: ${secs}s (first byte after ${ttfb}s), $(mbps "$bytes" "$secs") MB/s, RSS before $(kib_to_mib "$rss_before") MiB, peak $(kib_to_mib "$hwm") MiB; CPU % avg/max: server $CPU_SERVER, curl $CPU_CLIENT${WATCH_NAME:+, $WATCH_NAME $CPU_WATCH}"
    done

    if ((RANGE_BYTES > 0 && !RANGE_DONE && bytes == RANGE_BYTES)) && [[ "$CURRENT_FORMAT" == stream ]]; then
        tail -c "$RANGE_TAIL" "$src" >"$WORK/tail.bin"
        range_test "$blob" "$wrapped" "$bytes" "$WORK/tail.bin"
        RANGE_DONE=1
    fi
    ((LOCAL_STORAGE)) && rm -f "$stored"

    ROWS+=("| $size_text | $format | $(mbps "$bytes" "$best_up") | $(mbps "$bytes" "$best_down") | $(awk -v t="$ttfb_best" 'BEGIN {printf "%.3f", t}') | $(kib_to_mib "$peak_up_kb") | $(kib_to_mib "$peak_down_kb") |")
    local su cu wu sd cd wd
    read -r su cu wu <<<"$cpu_up"
    read -r sd cd wd <<<"$cpu_down"
    if [[ -n "$WATCH_PID" ]]; then
        CPU_ROWS+=("| $size_text | $format | $su | $wu | $cu | $sd | $wd | $cd |")
    else
        CPU_ROWS+=("| $size_text | $format | $su | $cu | $sd | $cd |")
    fi
}

for size_text in $SIZES; do
    bytes="$(parse_size "$size_text")"
    need="$(disk_needed "$bytes")"
    have="$(free_bytes "$WORK")"
    if ((have < need)); then
        log "[$size_text] skipped: $(kib_to_mib $((have / 1024))) MiB free in $WORK, this size needs about $(kib_to_mib $((need / 1024))) MiB"
        for format in $FORMATS; do ROWS+=("| $size_text | $format | skipped: not enough disk space | | | | |"); done
        continue
    fi
    src="$WORK/file-$size_text.src"
    log "[$size_text] creating $bytes random bytes ($(kib_to_mib $((have / 1024))) MiB free in $WORK)"
    head -c "$bytes" /dev/urandom >"$src"
    want_sha=""
    ((bytes <= VERIFY_MAX_BYTES)) && want_sha="$(sha256sum "$src" | awk '{print $1}')"
    for format in $FORMATS; do
        start_for_format "$format"
        measure "$size_text" "$bytes" "$src" "$want_sha"
    done
    rm -f "$src"
done

# The range test needs a stream blob of RANGE_SIZE; make one when the runs above did not.
if ((RANGE_BYTES > 0 && !RANGE_DONE)); then
    src="$WORK/range.src"
    log "[range] creating a $RANGE_BYTES-byte stream blob for the range test"
    head -c "$RANGE_BYTES" /dev/urandom >"$src"
    tail -c "$RANGE_TAIL" "$src" >"$WORK/tail.bin"
    start_for_format stream
    out="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/resp.json" -w '%{http_code}' "${AUTH[@]}" \
        -F "public-keys=<$PK_FILE" -F "file=@$src" -F overwrite=true "$BASE/upload/$CONTAINER/range.bin")" ||
        die "[range] upload: curl failed"
    [[ "$out" == 200 ]] || die "[range] upload answered HTTP $out: $(head -c 2000 "$WORK/resp.json")"
    rm -f "$src"
    wrapped="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["bench"])' "$WORK/resp.json")"
    range_test range.bin "$wrapped" "$RANGE_BYTES" "$WORK/tail.bin"
    ((LOCAL_STORAGE)) && rm -f "$DATA/$CONTAINER/range.bin"
fi
stop_server

# ---------------------------------------------------------------- report
echo
machine_line
echo "$BUSY_NOTE"
echo "client: curl $(curl --version | awk 'NR==1 {print $2}'); storage: $STORAGE_DESC; repeats: $REPEAT (best time, highest peak)"
echo "server idle RSS at start: $(kib_to_mib "$IDLE_RSS_KB") MiB"
((RESTART_PER_TRANSFER)) && echo "peak RSS: server restarted before each transfer (clear_refs unavailable)"
echo
echo "| size | format | upload MB/s | download MB/s | download first byte (s) | peak RSS upload (MiB) | peak RSS download (MiB) |"
echo "|---|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "CPU during the fastest transfer of each row, in % of one core (200 = both cores busy):"
echo "blobprox${WATCH_NAME:+ and $WATCH_NAME} as average/busiest 0.5 s; curl as average."
echo
if [[ -n "$WATCH_PID" ]]; then
    echo "| size | format | upload: blobprox | upload: $WATCH_NAME | upload: curl | download: blobprox | download: $WATCH_NAME | download: curl |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
else
    echo "| size | format | upload: blobprox | upload: curl | download: blobprox | download: curl |"
    echo "|---|---|---:|---:|---:|---:|"
fi
printf '%s\n' "${CPU_ROWS[@]}"
if ((RANGE_BYTES > 0)); then
    echo
    echo "Range reads (one curl process and connection per request; time_total in ms):"
    echo
    echo "| blob | range | requests | median | p95 | min | max |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    echo "$RANGE_RESULT"
fi
