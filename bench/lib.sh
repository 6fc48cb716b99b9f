# Shared helpers of the bench scripts (bench.sh, azurite.sh, auth.sh, load.sh). Source it after
# setting SCRIPT_NAME; it sets REPO_ROOT and defines the functions below. Nothing here starts
# anything by itself.
#
#   set_defaults N=V ...   sets each variable N that the environment leaves unset or empty to V
#   require_positive N ... dies unless each variable N holds a positive integer
#   bench_prepare          bench_build, check_idle, bench_workdir and bench_credentials, in that order
#   bench_build            BIN = the release binary (builds it unless BLOBPROX_BIN is set)
#   bench_workdir          WORK = a new temp dir; an EXIT trap stops everything started and removes it
#   bench_credentials      keygen + credentials in $WORK; sets API_KEY_VALUE, X_* and AUTH (curl -H args)
#   start_server VAR=...   starts `blobprox serve` on a free port with those extra variables; BASE, SERVER_PID
#                          (SCHEME=https and CURL_TLS=(--cacert ...) for a server started with TLS_*)
#   stop_server            SIGTERM, then SIGKILL after 5 s
#   bg_started PID         register a background process for the EXIT trap
#   mem_kb / reset_peak    "<VmRSS kB> <VmHWM kB>" of the server / reset its VmHWM (clear_refs)
#   cpu_ticks PID          utime+stime of a process in clock ticks
#   cpu_pct T0 T1 SECS     average CPU % (100 = one core) between two cpu_ticks readings
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_NAME="${SCRIPT_NAME:-bench}"
HEALTH_TIMEOUT_SECS="${HEALTH_TIMEOUT_SECS:-30}"
CLK_TCK="$(getconf CLK_TCK)"

die() {
    echo "$SCRIPT_NAME: error: $*" >&2
    exit 1
}
log() { echo "$SCRIPT_NAME: $*" >&2; }

require_tools() {
    local tool
    for tool in "$@"; do command -v "$tool" >/dev/null || die "$tool is required"; done
}

set_defaults() {
    local pair name
    for pair in "$@"; do
        name="${pair%%=*}"
        [[ -n "${!name:-}" ]] || printf -v "$name" '%s' "${pair#*=}"
    done
}

require_positive() {
    local name
    for name in "$@"; do
        [[ "${!name}" =~ ^[1-9][0-9]*$ ]] || die "$name must be a positive integer, not '${!name}'"
    done
}

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

kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t; else print "inf" }'; }
# smaller of two decimal numbers ("" counts as infinity)
min_time() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }
now() { date +%s.%N; }
# free space in bytes of the file system holding $1
free_bytes() { df -P -B1 "$1" | awk 'NR == 2 {print $4}'; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------- build
bench_build() {
    if [[ -n "${BLOBPROX_BIN:-}" ]]; then
        BIN="$BLOBPROX_BIN"
    else
        log "building the release binary in $REPO_ROOT"
        (cd "$REPO_ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/blobprox"
    fi
    [[ -x "$BIN" ]] || die "no executable at $BIN"
    # The server runs from the temp dir: make the path absolute.
    BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
}

# ---------------------------------------------------------------- temp dir, background processes, cleanup
SERVER_PID=""
BG_PIDS=()

bg_started() { BG_PIDS+=("$1"); }

# Stops one process: SIGTERM, up to 5 s, then SIGKILL.
stop_pid() {
    local pid="$1"
    [[ -n "$pid" ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=""
}

bench_cleanup() {
    local status=$?
    local pid
    stop_server
    for pid in "${BG_PIDS[@]}"; do stop_pid "$pid"; done
    [[ -n "${WORK:-}" ]] && rm -rf "$WORK"
    exit "$status"
}

bench_workdir() {
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/blobprox-$SCRIPT_NAME.XXXXXX")"
    SERVER_LOG="$WORK/server.log"
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# ---------------------------------------------------------------- keys and credentials
# What every benchmark does first: the binary, a check that the machine is idle, the temp dir,
# keys and credentials.
bench_prepare() {
    bench_build
    check_idle
    bench_workdir
    bench_credentials
}

bench_credentials() {
    KEYS="$WORK/keys"
    CREDS="$WORK/creds"
    "$BIN" keygen -p "$KEYS" >/dev/null || die "blobprox keygen failed"
    "$BIN" credentials -p "$CREDS" >/dev/null || die "blobprox credentials failed"
    local client_files key_files
    shopt -s nullglob
    client_files=("$CREDS"/*_blobprox.json)
    key_files=("$CREDS"/*_blobprox_encrypted.key)
    shopt -u nullglob
    [[ ${#client_files[@]} -eq 1 && ${#key_files[@]} -eq 1 ]] ||
        die "expected one *_blobprox.json and one *_blobprox_encrypted.key in $CREDS"
    local json="${client_files[0]}"
    X_SALT="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["salt"])' "$json")"
    X_DECRYPTION_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_key"])' "$json")"
    X_COMPARISON_KEY="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["key"])' "$json")"
    API_KEY_VALUE="$(tr -d '\r\n' <"${key_files[0]}")"
    AUTH=(-H "x-salt: $X_SALT" -H "x-decryption-key: $X_DECRYPTION_KEY" -H "x-comparison-key: $X_COMPARISON_KEY")
}

# Scheme of BASE, and curl arguments that the helpers' requests to it need (e.g. --cacert).
SCHEME=http
CURL_TLS=()

# Writes {"bench": <the server's public key>} to $1 (the recipients map of an upload).
fetch_recipients() {
    local answer
    answer="$(curl -fsS "${CURL_TLS[@]}" "${AUTH[@]}" "$BASE/key/public")" || die "GET /key/public failed"
    python3 -c 'import json,sys; pem=json.loads(sys.argv[1])["public_key"]; json.dump({"bench": pem}, open(sys.argv[2], "w"))' \
        "$answer" "$1" || die "unexpected /key/public answer: $answer"
}

# ---------------------------------------------------------------- server
# start_server [VAR=value ...]: the server runs from $WORK (so no caller's .env is read) with
# API_KEY, KEY_VAULT_PATH, RUST_LOG=${BENCH_RUST_LOG:-warn} and the given variables on top of the
# caller's environment.
start_server() {
    PORT="$(free_port)"
    BASE="$SCHEME://127.0.0.1:$PORT"
    (
        cd "$WORK" || exit 1
        exec env API_KEY="$API_KEY_VALUE" KEY_VAULT_PATH="$KEYS" RUST_LOG="${BENCH_RUST_LOG:-warn}" "$@" \
            "$BIN" serve --host 127.0.0.1 --port "$PORT"
    ) >>"$SERVER_LOG" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + HEALTH_TIMEOUT_SECS)) code
    until curl -fsS "${CURL_TLS[@]}" -o /dev/null --max-time 2 "$BASE/healthz" 2>/dev/null; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" 2>/dev/null && code=0 || code=$?
            SERVER_PID=""
            echo "$SCRIPT_NAME: error: the server exited (status $code) before answering /healthz; its log:" >&2
            sed 's/^/  | /' "$SERVER_LOG" >&2
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$SCRIPT_NAME: error: no answer from $BASE/healthz within ${HEALTH_TIMEOUT_SECS}s; server log:" >&2
            sed 's/^/  | /' "$SERVER_LOG" >&2
            exit 1
        fi
        sleep 0.1
    done
}

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

# utime + stime of a process (and its reaped children are not counted), in clock ticks
cpu_ticks() {
    # The command name (field 2) may contain spaces; cut everything up to the last ')'.
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || {
        echo 0
        return
    }
    stat="${stat##*) }"
    awk '{print $12 + $13}' <<<"$stat"
}
cpu_pct() {
    awk -v a="$1" -v b="$2" -v s="$3" -v hz="$CLK_TCK" 'BEGIN { if (s > 0) printf "%.0f", (b - a) / hz / s * 100; else print "-" }'
}

machine_line() {
    local cpu_model
    cpu_model="$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)"
    [[ -n "$cpu_model" ]] || cpu_model="$(uname -m)"
    echo "blobprox $("$BIN" --version 2>/dev/null | awk '{print $2}') ($(cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)); CPU: $(nproc) x $cpu_model; RAM: $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
}

# CPU used by everything on the machine over one second, in % of one core; run before starting
# anything. Other work (a compile, another benchmark) skews every number here.
machine_busy_pct() {
    local a b
    a="$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)"
    sleep 1
    b="$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)"
    awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; if (t > 0) printf "%.0f", (y[1] - x[1]) / t * n * 100; else print 0 }'
}
# Warns on stderr when the machine is busy, and sets BUSY_NOTE for the report.
check_idle() {
    local busy
    busy="$(machine_busy_pct)"
    BUSY_NOTE="CPU in use by other processes just before the start: ${busy}% of one core"
    if ((busy > 25)); then
        BUSY_NOTE="$BUSY_NOTE (WARNING: the machine was not idle; numbers may be skewed)"
        log "warning: ${busy}% of one core in use before the start; other work skews the numbers"
    fi
}
