#!/usr/bin/env bash
# Measures blobprox upload/download throughput and the server's peak memory, with curl as the
# client. See bench/README.md. Progress goes to stderr, the report to stdout.
#
#   SIZES="1M 64M 1G"   file sizes (suffix K/M/G = KiB/MiB/GiB; a bare number is bytes)
#   REPEAT=1            transfers per size and direction; the best time is reported
#   STORAGE_URL=...     storage (default: file://<temp dir>/data); container "bench" must exist
#   BLOB_FORMAT=...     passed to the server (stream | fernet); unset = the server's default
#   BLOBPROX_BIN=...    use this binary instead of building target/release/blobprox
#   BENCH_RUST_LOG=warn RUST_LOG of the server
# Every other variable in the environment reaches the server unchanged.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"

SIZES="${SIZES:-1M 64M 1G}"
REPEAT="${REPEAT:-1}"
CONTAINER="bench"
VERIFY_MAX_BYTES=$((64 * 1024 * 1024)) # sha256-compare downloads up to this size
HEALTH_TIMEOUT_SECS=30
CURL_MAX_TIME="${CURL_MAX_TIME:-3600}"

die() {
    echo "bench: error: $*" >&2
    exit 1
}
log() { echo "bench: $*" >&2; }

for tool in curl python3 sha256sum head awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, not '$REPEAT'"

# "64M" -> 67108864
parse_size() {
    local text="$1"
    [[ "$text" =~ ^([0-9]+)([KkMmGg]?)(i?B)?$ ]] || die "cannot parse size '$text' (use e.g. 512K, 64M, 1G)"
    local n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[2]^^}"
    case "$unit" in
        K) echo $((n * 1024)) ;;
        M) echo $((n * 1024 * 1024)) ;;
        G) echo $((n * 1024 * 1024 * 1024)) ;;
        *) echo "$n" ;;
    esac
}
# Validate all sizes before doing anything slow.
for s in $SIZES; do parse_size "$s" >/dev/null; done
[[ -n "${SIZES// /}" ]] || die "SIZES is empty"

# ---------------------------------------------------------------- build
if [[ -n "${BLOBPROX_BIN:-}" ]]; then
    BIN="$BLOBPROX_BIN"
else
    log "building the release binary in $REPO_ROOT"
    (cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/blobprox"
fi
[[ -x "$BIN" ]] || die "no executable at $BIN"

# ---------------------------------------------------------------- temp dir and cleanup
WORK="$(mktemp -d "${TMPDIR:-/tmp}/blobprox-bench.XXXXXX")"
SERVER_PID=""
SERVER_LOG="$WORK/server.log"

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    local status=$?
    stop_server
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KEYS="$WORK/keys"
CREDS="$WORK/creds"
DATA="$WORK/data"
mkdir -p "$DATA/$CONTAINER"
STORAGE_URL="${STORAGE_URL:-file://$DATA}"

"$BIN" keygen -p "$KEYS" >/dev/null || die "blobprox keygen failed"
"$BIN" credentials -p "$CREDS" >/dev/null || die "blobprox credentials failed"
shopt -s nullglob
client_files=("$CREDS"/*_blobprox.json)
key_files=("$CREDS"/*_blobprox_encrypted.key)
shopt -u nullglob
[[ ${#client_files[@]} -eq 1 && ${#key_files[@]} -eq 1 ]] ||
    die "expected one *_blobprox.json and one *_blobprox_encrypted.key in $CREDS"
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
X_SALT="$(json_field "${client_files[0]}" salt)"
X_DECRYPTION_KEY="$(json_field "${client_files[0]}" decryption_key)"
X_COMPARISON_KEY="$(json_field "${client_files[0]}" key)"
API_KEY_VALUE="$(tr -d '\r\n' <"${key_files[0]}")"
AUTH=(-H "x-salt: $X_SALT" -H "x-decryption-key: $X_DECRYPTION_KEY" -H "x-comparison-key: $X_COMPARISON_KEY")

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------- server
start_server() {
    PORT="$(free_port)"
    BASE="http://127.0.0.1:$PORT"
    # Run from the temp dir so that a .env in the caller's directory is not picked up.
    (
        cd "$WORK"
        exec env API_KEY="$API_KEY_VALUE" KEY_VAULT_PATH="$KEYS" STORAGE_URL="$STORAGE_URL" \
            RUST_LOG="${BENCH_RUST_LOG:-warn}" \
            "$BIN" serve --host 127.0.0.1 --port "$PORT"
    ) >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + HEALTH_TIMEOUT_SECS))
    until curl -fsS -o /dev/null --max-time 2 "$BASE/healthz" 2>/dev/null; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
            SERVER_PID=""
            echo "bench: error: the server exited (status $code) before answering /healthz; its log:" >&2
            sed 's/^/  | /' "$SERVER_LOG" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "bench: error: no answer from $BASE/healthz within ${HEALTH_TIMEOUT_SECS}s; server log:" >&2
            sed 's/^/  | /' "$SERVER_LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
}

# "<VmRSS kB> <VmHWM kB>" of the server
mem_kb() {
    awk '/^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} END {print r, h}' "/proc/$SERVER_PID/status"
}
# Resets the peak RSS (VmHWM) to the current RSS. Fails if the kernel does not allow it.
reset_peak() {
    { echo 5 >"/proc/$SERVER_PID/clear_refs"; } 2>/dev/null || return 1
    local rss hwm
    read -r rss hwm < <(mem_kb)
    ((hwm <= rss + 1024))
}
kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

start_server
read -r IDLE_RSS_KB _ < <(mem_kb)
if reset_peak; then
    RESTART_PER_TRANSFER=0
    log "server up at $BASE (pid $SERVER_PID); peak RSS reset via /proc/PID/clear_refs works"
else
    RESTART_PER_TRANSFER=1
    log "server up at $BASE; /proc/PID/clear_refs does not reset VmHWM here, restarting the server before each transfer"
fi

# Before a measured transfer: a clean peak-RSS counter. Echoes the RSS (kB) at the start.
prepare_transfer() {
    if ((RESTART_PER_TRANSFER)); then
        stop_server
        start_server
    else
        reset_peak || die "resetting VmHWM failed"
    fi
}

pubkey_json="$(curl -fsS "${AUTH[@]}" "$BASE/key/public")" || die "GET /key/public failed"
PK_FILE="$WORK/public-keys.json"
python3 -c 'import json,sys; pem=json.loads(sys.argv[1])["public_key"]; json.dump({"bench": pem}, open(sys.argv[2], "w"))' \
    "$pubkey_json" "$PK_FILE" || die "unexpected /key/public answer: $pubkey_json"

# ---------------------------------------------------------------- transfers
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t; else print "inf" }'; }
# smaller of two decimal numbers ("" counts as infinity)
min_time() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

ROWS=()
for size_text in $SIZES; do
    bytes="$(parse_size "$size_text")"
    blob="file-$size_text.bin"
    src="$WORK/$blob"
    log "[$size_text] creating $bytes random bytes"
    head -c "$bytes" /dev/urandom >"$src"
    want_sha=""
    if ((bytes <= VERIFY_MAX_BYTES)); then
        want_sha="$(sha256sum "$src" | awk '{print $1}')"
    fi

    best_up="" peak_up_kb=0 wrapped=""
    for run in $(seq "$REPEAT"); do
        prepare_transfer
        read -r rss_before _ < <(mem_kb)
        out="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/resp.json" -w '%{http_code} %{time_total}' \
            "${AUTH[@]}" -F "public-keys=<$PK_FILE" -F "file=@$src" -F overwrite=true \
            "$BASE/upload/$CONTAINER/$blob")" || die "[$size_text] upload: curl failed (server log: $(tail -n 5 "$SERVER_LOG"))"
        read -r code secs <<<"$out"
        [[ "$code" == 200 ]] || die "[$size_text] upload answered HTTP $code: $(head -c 2000 "$WORK/resp.json")"
        read -r _ hwm < <(mem_kb)
        wrapped="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["bench"])' "$WORK/resp.json")" ||
            die "[$size_text] no decryption_keys.bench in the upload answer: $(head -c 2000 "$WORK/resp.json")"
        ((hwm > peak_up_kb)) && peak_up_kb=$hwm
        best_up="$(min_time "$best_up" "$secs")"
        log "[$size_text] upload $run/$REPEAT: ${secs}s, $(mbps "$bytes" "$secs") MB/s, RSS before $(kib_to_mib "$rss_before") MiB, peak $(kib_to_mib "$hwm") MiB"
    done

    # What was stored: format (from the first bytes) and size, when the storage is a local directory.
    stored="$DATA/$CONTAINER/$blob"
    if [[ "$STORAGE_URL" == "file://$DATA" && -f "$stored" ]]; then
        if [[ "$(head -c 6 "$stored")" == "gAAAAA" ]]; then format="fernet"; else format="stream"; fi
        stored_bytes="$(stat -c %s "$stored")"
        log "[$size_text] stored as $format, $stored_bytes bytes ($(awk -v s="$stored_bytes" -v b="$bytes" 'BEGIN {printf "%.3f", s / b}')x the plaintext)"
    else
        format="${BLOB_FORMAT:-default}"
    fi

    if [[ -n "$want_sha" ]]; then
        copy="$WORK/download.bin"
        code="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$copy" -w '%{http_code}' "${AUTH[@]}" -H "x-blob-key: $wrapped" \
            "$BASE/download/$CONTAINER/$blob")" || die "[$size_text] verification download: curl failed"
        [[ "$code" == 200 ]] || die "[$size_text] verification download answered HTTP $code: $(head -c 2000 "$copy")"
        got_sha="$(sha256sum "$copy" | awk '{print $1}')"
        rm -f "$copy"
        [[ "$got_sha" == "$want_sha" ]] || die "[$size_text] downloaded content differs from the upload (sha256 $got_sha, want $want_sha)"
        log "[$size_text] download verified (sha256 matches)"
    fi

    best_down="" peak_down_kb=0
    for run in $(seq "$REPEAT"); do
        prepare_transfer
        read -r rss_before _ < <(mem_kb)
        out="$(curl -sS --max-time "$CURL_MAX_TIME" -o /dev/null -w '%{http_code} %{time_total} %{size_download} %{time_starttransfer}' \
            "${AUTH[@]}" -H "x-blob-key: $wrapped" "$BASE/download/$CONTAINER/$blob")" ||
            die "[$size_text] download: curl failed (server log: $(tail -n 5 "$SERVER_LOG"))"
        read -r code secs got ttfb <<<"$out"
        [[ "$code" == 200 ]] || die "[$size_text] download answered HTTP $code"
        [[ "$got" == "$bytes" ]] || die "[$size_text] download returned $got bytes, want $bytes"
        read -r _ hwm < <(mem_kb)
        ((hwm > peak_down_kb)) && peak_down_kb=$hwm
        best_down="$(min_time "$best_down" "$secs")"
        log "[$size_text] download $run/$REPEAT: ${secs}s (first byte after ${ttfb}s), $(mbps "$bytes" "$secs") MB/s, RSS before $(kib_to_mib "$rss_before") MiB, peak $(kib_to_mib "$hwm") MiB"
    done

    rm -f "$src" "$stored"
    ROWS+=("| $size_text | $format | $(mbps "$bytes" "$best_up") | $(mbps "$bytes" "$best_down") | $(kib_to_mib "$peak_up_kb") | $(kib_to_mib "$peak_down_kb") |")
done

# ---------------------------------------------------------------- report
cpu_model="$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
[[ -n "$cpu_model" ]] || cpu_model="$(uname -m)"
echo
echo "blobprox $("$BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)), client curl $(curl --version | awk 'NR==1 {print $2}')"
echo "CPU: $(nproc) x $cpu_model; storage: $STORAGE_URL; repeats: $REPEAT (best time, highest peak)"
echo "server idle RSS at start: $(kib_to_mib "$IDLE_RSS_KB") MiB"
if ((RESTART_PER_TRANSFER)); then
    echo "peak RSS: server restarted before each transfer (clear_refs unavailable)"
fi
echo
echo "| size | format | upload MB/s | download MB/s | peak RSS upload (MiB) | peak RSS download (MiB) |"
echo "|---|---|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
