#!/usr/bin/env bash
# Authentication under load: requests/s of authenticated GET /key/public, and the latency of valid
# requests while wrong credentials flood the server. See bench/README.md. Installs wrk with apt-get
# when it is missing. Progress and the raw wrk outputs go to stderr, the report to stdout.
#
#   DURATION=20          seconds of each measured wrk run
#   THREADS=2 CONNECTIONS=64            the valid-credentials wrk (wrk -tTHREADS -cCONNECTIONS)
#   FLOOD_THREADS=1 FLOOD_CONNECTIONS=16  the wrong-credentials wrk, from 127.0.0.1 like the valid one
#   SPREAD_ADDRESSES=256 SPREAD_CONNECTIONS=256 the wrong-credentials flood from N addresses from 127.0.1.1 on (flood.py);
#                        SPREAD_ADDRESSES=0 skips that phase
#   BLOBPROX_BIN, BENCH_RUST_LOG        as in bench.sh
set -euo pipefail

SCRIPT_NAME=auth
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SCRIPT_DIR="$REPO_ROOT/bench"

set_defaults DURATION=20 THREADS=2 CONNECTIONS=64 FLOOD_THREADS=1 FLOOD_CONNECTIONS=16 \
    SPREAD_ADDRESSES=256 SPREAD_CONNECTIONS=256
require_positive DURATION THREADS CONNECTIONS FLOOD_THREADS FLOOD_CONNECTIONS SPREAD_CONNECTIONS
if ! [[ "$SPREAD_ADDRESSES" =~ ^[0-9]+$ ]] || ((SPREAD_ADDRESSES > 65000)); then die "SPREAD_ADDRESSES must be 0..65000"; fi
((DURATION <= 300)) || die "DURATION is at most 300 s"

require_tools curl python3 awk
if ! command -v wrk >/dev/null; then
    log "installing wrk with apt-get"
    { apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }; } >&2 || die "apt-get install wrk failed"
fi

bench_prepare
mkdir -p "$WORK/data/bench"

# Wrong credentials of the right shape: a fresh salt and keys that do not match API_KEY.
WRONG_SALT="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
WRONG_KEY="$(python3 -c 'import base64, secrets; print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())')"
WRONG_HEADERS=("x-salt: $WRONG_SALT" "x-decryption-key: $WRONG_KEY" "x-comparison-key: $X_COMPARISON_KEY")
VALID_HEADERS=("x-salt: $X_SALT" "x-decryption-key: $X_DECRYPTION_KEY" "x-comparison-key: $X_COMPARISON_KEY")
VALID_WRK=()
for h in "${VALID_HEADERS[@]}"; do VALID_WRK+=(-H "$h"); done
WRONG_WRK=()
for h in "${WRONG_HEADERS[@]}"; do WRONG_WRK+=(-H "$h"); done

# wrk script that counts answers per status over all threads and prints "status CODE COUNT".
cat >"$WORK/count.lua" <<'EOF'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) counts = {} end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("counts")) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d %d\n", code, n)) end
end
EOF

# /key/public answers per status so far, from the server's own counters: "200=N 401=N 429=N"
server_counts() {
    curl -fsS "$BASE/metrics" | awk -F'[{}]' '$1 == "blobprox_requests_total" && $2 ~ /route="\/key\/public"/ {
        match($2, /status="[0-9]+"/); s = substr($2, RSTART + 8, 3); n[s] = $3 + 0
    } END { printf "200=%d 401=%d 429=%d other=%d", n["200"], n["401"], n["429"], 0 }'
}
# difference of two server_counts strings
counts_diff() {
    python3 - "$1" "$2" <<'EOF'
import sys
a = dict(kv.split("=") for kv in sys.argv[1].split())
b = dict(kv.split("=") for kv in sys.argv[2].split())
print(" ".join(f"{k}={int(b[k]) - int(a[k])}" for k in ("200", "401", "429")))
EOF
}

# wrk output -> variables: W_RPS, W_P50, W_P90, W_P99, W_MAX (ms), W_NON2XX, W_SOCKERR
parse_wrk() {
    local file="$1"
    W_RPS="$(awk '/^Requests\/sec:/ {print $2}' "$file")"
    W_NON2XX="$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$file")"
    W_NON2XX="${W_NON2XX:-0}"
    W_SOCKERR="$(awk '/Socket errors:/ {sub(/^ *Socket errors: */, ""); print}' "$file")"
    W_SOCKERR="${W_SOCKERR:-none}"
    to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'; }
    W_P50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$file")")"
    W_P90="$(to_ms "$(awk '$1 == "90%" {print $2}' "$file")")"
    W_P99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$file")")"
    W_MAX="$(to_ms "$(awk '$1 == "Latency" {print $4; exit}' "$file")")"
}

show() {
    sed 's/^/  | /' "$1" >&2
}

# ---------------------------------------------------------------- start, warm the credential cache
start_server STORAGE_URL="file://$WORK/data"
log "server up at $BASE (pid $SERVER_PID)"
out="$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' "${AUTH[@]}" "$BASE/key/public")"
read -r code first_secs <<<"$out"
[[ "$code" == 200 ]] || die "GET /key/public with valid credentials answered $code"
out="$(curl -sS -o /dev/null -w '%{http_code} %{time_total}' "${AUTH[@]}" "$BASE/key/public")"
read -r code cached_secs <<<"$out"
log "first valid request (key derivation): $(awk -v s="$first_secs" 'BEGIN {printf "%.1f ms", s * 1000}'), second (cached): $(awk -v s="$cached_secs" 'BEGIN {printf "%.2f ms", s * 1000}')"
read -r rss0 _ < <(mem_kb)

# valid_wrk NAME: the valid-credentials wrk into $WORK/NAME.txt; RUN_CPU = the server's CPU % meanwhile.
valid_wrk() {
    local t0 s0
    t0="$(cpu_ticks "$SERVER_PID")" s0="$(now)"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "${VALID_WRK[@]}" "$BASE/key/public" >"$WORK/$1.txt"
    RUN_CPU="$(cpu_pct "$t0" "$(cpu_ticks "$SERVER_PID")" "$(awk -v a="$s0" -v b="$(now)" 'BEGIN {print b - a}')")"
}

# ---------------------------------------------------------------- (a) valid credentials only
log "(a) wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, valid credentials"
before="$(server_counts)"
valid_wrk a
a_cpu=$RUN_CPU
a_counts="$(counts_diff "$before" "$(server_counts)")"
show "$WORK/a.txt"
parse_wrk "$WORK/a.txt"
ROW_A="| (a) valid only | $W_RPS | $W_P50 | $W_P90 | $W_P99 | $W_MAX | $W_NON2XX | $W_SOCKERR | $a_cpu | server: $a_counts |"

# ---------------------------------------------------------------- (b) + a wrong-credential flood from 127.0.0.1
log "(b) wrong-credential flood (wrk -t$FLOOD_THREADS -c$FLOOD_CONNECTIONS, 127.0.0.1) + valid wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency"
before="$(server_counts)"
wrk -t"$FLOOD_THREADS" -c"$FLOOD_CONNECTIONS" -d"$((DURATION + 4))s" -s "$WORK/count.lua" "${WRONG_WRK[@]}" "$BASE/key/public" >"$WORK/b-flood.txt" &
FLOOD_PID=$!
bg_started "$FLOOD_PID"
sleep 2
valid_wrk b
b_cpu=$RUN_CPU
wait "$FLOOD_PID" || die "the flood wrk failed: $(cat "$WORK/b-flood.txt")"
b_counts="$(counts_diff "$before" "$(server_counts)")"
log "(b) the valid wrk:"
show "$WORK/b.txt"
log "(b) the flood wrk:"
show "$WORK/b-flood.txt"
parse_wrk "$WORK/b.txt"
flood_rps="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/b-flood.txt")"
flood_401="$(awk '$1 == "status" && $2 == 401 {print $3}' "$WORK/b-flood.txt")"
flood_429="$(awk '$1 == "status" && $2 == 429 {print $3}' "$WORK/b-flood.txt")"
flood_other="$(awk '$1 == "status" && $2 != 401 && $2 != 429 {s = s $2 "=" $3 " "} END {print s}' "$WORK/b-flood.txt")"
ROW_B="| (b) valid + wrong-credential flood from 127.0.0.1 | $W_RPS | $W_P50 | $W_P90 | $W_P99 | $W_MAX | $W_NON2XX | $W_SOCKERR | $b_cpu | server: $b_counts |"
FLOOD_B="wrk flood from 127.0.0.1 ($((DURATION + 4)) s, from 2 s before to 2 s after the valid run): $flood_rps requests/s; 401: ${flood_401:-0}, 429: ${flood_429:-0}${flood_other:+, other: $flood_other}"

# ---------------------------------------------------------------- (c) + a flood from many addresses
ROW_C="" FLOOD_C=""
if ((SPREAD_ADDRESSES > 0)); then
    last="$(python3 -c 'import ipaddress, sys; print(ipaddress.IPv4Address("127.0.1.0") + int(sys.argv[1]))' "$SPREAD_ADDRESSES")"
    log "(c) wrong-credential flood from 127.0.1.1-$last ($SPREAD_CONNECTIONS connections, flood.py) + valid wrk"
    before="$(server_counts)"
    flood_args=(--url "$BASE/key/public" --duration "$((DURATION + 4))" --connections "$SPREAD_CONNECTIONS" --sources "127.0.1.1-$last")
    for h in "${WRONG_HEADERS[@]}"; do flood_args+=(--header "$h"); done
    python3 "$SCRIPT_DIR/flood.py" "${flood_args[@]}" >"$WORK/c-flood.json" &
    FLOOD_PID=$!
    bg_started "$FLOOD_PID"
    sleep 2
    valid_wrk c
    c_cpu=$RUN_CPU
    wait "$FLOOD_PID" || die "flood.py failed"
    c_counts="$(counts_diff "$before" "$(server_counts)")"
    log "(c) the valid wrk:"
    show "$WORK/c.txt"
    log "(c) flood.py: $(cat "$WORK/c-flood.json")"
    parse_wrk "$WORK/c.txt"
    ROW_C="| (c) valid + wrong-credential flood from $SPREAD_ADDRESSES addresses | $W_RPS | $W_P50 | $W_P90 | $W_P99 | $W_MAX | $W_NON2XX | $W_SOCKERR | $c_cpu | server: $c_counts |"
    FLOOD_C="flood.py from 127.0.1.1-$last ($((DURATION + 4)) s, from 2 s before to 2 s after the valid run): $(python3 - "$WORK/c-flood.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
line = f"{d['requests_per_second']} requests/s; " + ", ".join(f"{k}: {v}" for k, v in d["statuses"].items())
print(line + (f"; errors: {d['errors']}" if d["errors"] else ""))
EOF
)"
fi
read -r rss1 hwm1 < <(mem_kb)

# ---------------------------------------------------------------- (d) a client not yet verified, during a flood from its address
log "(d) restart (empty credential cache), flood from 127.0.0.1 for 6 s, then one valid request from 127.0.0.1"
stop_server
start_server STORAGE_URL="file://$WORK/data"
wrk -t1 -c4 -d6s "${WRONG_WRK[@]}" "$BASE/key/public" >"$WORK/d-flood.txt" &
FLOOD_PID=$!
bg_started "$FLOOD_PID"
sleep 3
d_during="$(curl -sS -D - -o /dev/null -w 'status=%{http_code}' "${AUTH[@]}" "$BASE/key/public" | awk -F': *' 'tolower($1) == "retry-after" {sub(/\r$/, "", $2); r = " retry-after=" $2} /^status=/ {s = $0} END {print s r}')"
wait "$FLOOD_PID" || true
d_after="$(curl -sS -o /dev/null -w 'status=%{http_code}' "${AUTH[@]}" "$BASE/key/public")"
d_other="$(curl -sS -o /dev/null -w 'status=%{http_code}' --interface 127.0.0.2 "${AUTH[@]}" "$BASE/key/public")"
log "(d) valid request from 127.0.0.1 during the flood: $d_during; right after it: $d_after; from 127.0.0.2: $d_other"
stop_server

# ---------------------------------------------------------------- report
echo
machine_line
echo "$BUSY_NOTE"
echo "wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'); GET /key/public; every wrk run ${DURATION} s; server RSS: $(kib_to_mib "$rss0") MiB after warm-up, $(kib_to_mib "$rss1") MiB after (c), peak $(kib_to_mib "$hwm1") MiB"
echo "first request with valid credentials (PBKDF2, 100,000 iterations): $(awk -v s="$first_secs" 'BEGIN {printf "%.1f ms", s * 1000}'); next (cached): $(awk -v s="$cached_secs" 'BEGIN {printf "%.2f ms", s * 1000}')"
echo
echo "Valid requests, wrk -t$THREADS -c$CONNECTIONS --latency (latencies in ms; server CPU in % of one core, 200 = both):"
echo
echo "| run | requests/s | p50 | p90 | p99 | max | non-2xx | socket errors | server CPU % | /key/public answers (server counters) |"
echo "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"
echo "$ROW_A"
echo "$ROW_B"
[[ -n "$ROW_C" ]] && echo "$ROW_C"
echo
echo "- $FLOOD_B"
[[ -n "$FLOOD_C" ]] && echo "- $FLOOD_C"
echo "- (d) fresh server (empty credential cache), wrong-credential flood from 127.0.0.1: a valid request from 127.0.0.1 during the flood got $d_during; right after the flood: $d_after; the same valid request from 127.0.0.2: $d_other"
