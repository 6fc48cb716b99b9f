#!/usr/bin/env bash
# What TLS costs: the same transfers over plain HTTP/1.1, HTTPS with HTTP/1.1 and HTTPS with
# HTTP/2 (ALPN), with curl as the client and a self-signed P-256 certificate made by openssl.
# See bench/README.md. Progress goes to stderr, the report to stdout.
#
#   SIZE=1G              large file, uploaded and downloaded per mode (stream format)
#   REPEAT=1             large transfers per mode and direction; the best time is reported
#   SMALL=64K            small blob of the request-latency rows
#   REQUESTS=200         small downloads, each on a new connection, and again all on one connection
#   UPLOADS=50           small uploads, each on a new connection
#   MODES="http https-h1 https-h2"
#   BLOBPROX_BIN=...     use this binary instead of building target/release/blobprox
set -euo pipefail

SCRIPT_NAME=tls
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SCRIPT_DIR="$REPO_ROOT/bench"

set_defaults SIZE=1G SMALL=64K REQUESTS=200 UPLOADS=50 REPEAT=1 "MODES=http https-h1 https-h2"
CONTAINER=bench

require_tools curl openssl python3 awk head
require_positive REQUESTS UPLOADS REPEAT
for mode in $MODES; do
    [[ "$mode" =~ ^(http|https-h1|https-h2)$ ]] || die "unknown mode '$mode' in MODES (http | https-h1 | https-h2)"
done
BIG_BYTES="$(parse_size "$SIZE")"
SMALL_BYTES="$(parse_size "$SMALL")"

bench_prepare
mkdir -p "$WORK/data/$CONTAINER"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null ||
    die "openssl could not make the test certificate"
log "creating $BIG_BYTES and $SMALL_BYTES random bytes"
head -c "$BIG_BYTES" /dev/urandom >"$WORK/big.src"
head -c "$SMALL_BYTES" /dev/urandom >"$WORK/small.src"
PK_FILE="$WORK/public-keys.json"

# Starts the server for MODE; CURL_MODE then is curl with that mode's arguments and credentials.
start_mode() {
    local mode="$1"
    stop_server
    local storage=(STORAGE_URL="file://$WORK/data" BLOB_FORMAT=stream)
    if [[ "$mode" == http ]]; then
        SCHEME=http CURL_TLS=(--http1.1)
        start_server "${storage[@]}"
    else
        SCHEME=https CURL_TLS=(--cacert "$WORK/tls.crt")
        [[ "$mode" == https-h2 ]] && CURL_TLS+=(--http2) || CURL_TLS+=(--http1.1)
        start_server "${storage[@]}" TLS_CERT_FILE="$WORK/tls.crt" TLS_KEY_FILE="$WORK/tls.key"
    fi
    fetch_recipients "$PK_FILE"
    CURL_MODE=(curl -sS --max-time 3600 "${CURL_TLS[@]}" "${AUTH[@]}")
}

# upload_args NAME FILE OUT: sets UPLOAD to the curl arguments that POST FILE as blob NAME; the
# answer goes to OUT, stdout gets "<version> <status> <time>".
upload_args() {
    UPLOAD=(-o "$3" -w '%{http_version} %{http_code} %{time_total}\n' -F "public-keys=<$PK_FILE"
        -F overwrite=true -F "file=@$2" "$BASE/upload/$CONTAINER/$1")
}

wrapped_key() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["bench"])' "$1"; }

# sampled COMMAND...: runs it under run_sampled.py; sets CPU_SERVER ("avg/max" of the server, % of a core).
sampled() {
    python3 "$SCRIPT_DIR/run_sampled.py" --report "$WORK/cpu.txt" --watch "server=$SERVER_PID" -- "$@"
    CPU_SERVER="$(awk '$1 == "server" {print $2 "/" $3}' "$WORK/cpu.txt")"
}

# median and p95 (nearest rank) in ms of the seconds on stdin, as "median / p95"
latency() {
    python3 -c 'import math, statistics, sys
ts = sorted(float(t) * 1000 for t in sys.stdin.read().split())
print(f"{statistics.median(ts):.2f} / {ts[math.ceil(0.95 * len(ts)) - 1]:.2f}")'
}

# Checks one "<version> <status> ..." line against the mode's HTTP version and a status.
check() {
    local tag="$1" line="$2" status="$3" version
    version=1.1
    [[ "$CURRENT_MODE" == https-h2 ]] && version=2
    [[ "$line" == "$version $status "* ]] || die "$tag: got '$line', want HTTP/$version $status (server log: $(tail -n 5 "$SERVER_LOG"))"
}

ROWS=()
for mode in $MODES; do
    CURRENT_MODE="$mode"
    start_mode "$mode"
    log "[$mode] server up at $BASE"

    up_secs="" down_secs=""
    for run in $(seq "$REPEAT"); do
        sync
        upload_args big.bin "$WORK/big.src" "$WORK/answer.json"
        sampled "${CURL_MODE[@]}" "${UPLOAD[@]}" >"$WORK/out.txt" || die "[$mode] upload: curl failed"
        check "[$mode] $SIZE upload" "$(cat "$WORK/out.txt")" 200
        secs="$(awk '{print $3}' "$WORK/out.txt")"
        [[ "$(min_time "$up_secs" "$secs")" == "$secs" ]] && up_secs="$secs" up_cpu="$CPU_SERVER"
        log "[$mode] $SIZE upload $run/$REPEAT: ${secs}s, $(mbps "$BIG_BYTES" "$secs") MB/s, server CPU $CPU_SERVER"
    done
    big_key="$(wrapped_key "$WORK/answer.json")"

    for run in $(seq "$REPEAT"); do
        sampled "${CURL_MODE[@]}" -o /dev/null -w '%{http_version} %{http_code} %{time_total} %{size_download}\n' \
            -H "x-blob-key: $big_key" "$BASE/download/$CONTAINER/big.bin" >"$WORK/out.txt" || die "[$mode] download: curl failed"
        check "[$mode] $SIZE download" "$(cat "$WORK/out.txt")" 200
        read -r _ _ secs got <"$WORK/out.txt"
        [[ "$got" == "$BIG_BYTES" ]] || die "[$mode] download returned $got bytes, want $BIG_BYTES"
        [[ "$(min_time "$down_secs" "$secs")" == "$secs" ]] && down_secs="$secs" down_cpu="$CPU_SERVER"
        log "[$mode] $SIZE download $run/$REPEAT: ${secs}s, $(mbps "$BIG_BYTES" "$secs") MB/s, server CPU $CPU_SERVER"
    done
    rm -f "$WORK/data/$CONTAINER/big.bin"

    : >"$WORK/times.txt"
    upload_args small.bin "$WORK/small.src" "$WORK/answer.json"
    for i in $(seq "$UPLOADS"); do
        line="$("${CURL_MODE[@]}" "${UPLOAD[@]}")" || die "[$mode] small upload $i: curl failed"
        check "[$mode] $SMALL upload $i" "$line" 200
        awk '{print $3}' <<<"$line" >>"$WORK/times.txt"
    done
    small_up="$(latency <"$WORK/times.txt")"
    small_key="$(wrapped_key "$WORK/answer.json")"

    : >"$WORK/times.txt"
    for i in $(seq "$REQUESTS"); do
        line="$("${CURL_MODE[@]}" -o "$WORK/small.out" -w '%{http_version} %{http_code} %{time_total}\n' \
            -H "x-blob-key: $small_key" "$BASE/download/$CONTAINER/small.bin")" || die "[$mode] small download $i: curl failed"
        check "[$mode] $SMALL download $i" "$line" 200
        cmp -s "$WORK/small.out" "$WORK/small.src" || die "[$mode] small download $i: wrong bytes"
        awk '{print $3}' <<<"$line" >>"$WORK/times.txt"
    done
    small_new="$(latency <"$WORK/times.txt")"

    # The same downloads from one curl process, which keeps its connection: no handshake per request.
    : >"$WORK/urls.txt"
    for i in $(seq "$REQUESTS"); do
        printf 'url = "%s"\noutput = "/dev/null"\n' "$BASE/download/$CONTAINER/small.bin" >>"$WORK/urls.txt"
    done
    start="$(now)"
    "${CURL_MODE[@]}" -K "$WORK/urls.txt" -w '%{http_version} %{http_code} %{time_total} %{num_connects}\n' \
        -H "x-blob-key: $small_key" >"$WORK/out.txt" || die "[$mode] small downloads on one connection: curl failed"
    wall="$(awk -v a="$start" -v b="$(now)" 'BEGIN {print b - a}')"
    while read -r line; do check "[$mode] $SMALL download on one connection" "$line" 200; done <"$WORK/out.txt"
    connects="$(awk '{n += $4} END {print n}' "$WORK/out.txt")"
    [[ "$connects" == 1 ]] || die "[$mode] curl opened $connects connections for the keep-alive run, want 1"
    small_kept="$(awk '{print $3}' "$WORK/out.txt" | latency)"
    per_sec="$(awk -v n="$REQUESTS" -v t="$wall" 'BEGIN {printf "%.0f", n / t}')"
    log "[$mode] $SMALL: uploads $small_up ms, downloads $small_new ms (new connections), $small_kept ms and $per_sec/s (one connection)"

    ROWS+=("| $mode | $(mbps "$BIG_BYTES" "$up_secs") | $up_cpu | $(mbps "$BIG_BYTES" "$down_secs") | $down_cpu | $small_up | $small_new | $small_kept | $per_sec |")
done
stop_server

echo
machine_line
echo "$BUSY_NOTE"
echo "client: curl $(curl --version | awk 'NR==1 {print $2}') ($(curl --version | awk 'NR==1 {print $5}')); storage: local directory; format: stream"
echo
echo "| mode | $SIZE upload MB/s | upload server CPU % | $SIZE download MB/s | download server CPU % | $SMALL upload ms, new connection (median / p95) | $SMALL download ms, new connection | $SMALL download ms, one connection | $SMALL downloads/s, one connection |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Large transfers: best of $REPEAT; server CPU is average/busiest 0.5 s of that run, in % of one core."
echo "Small requests: $UPLOADS uploads and $REQUESTS downloads per mode, one curl process and connection each;"
echo "then $REQUESTS downloads from one curl process on one connection."
