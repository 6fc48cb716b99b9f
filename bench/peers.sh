#!/usr/bin/env bash
# blobprox side by side with its peers: rclone's crypt remote (`rclone serve webdav`) and plain
# nginx with WebDAV PUT, all on the loopback over local directories, the same clients, interleaved
# rounds, every download sha256-checked. Prints the table and goals of issue 11. See
# bench/README.md. Progress goes to stderr, the report to stdout; exits 1 when a check failed.
#
#   BIG_SIZE=1G  MID_SIZE=256M  ROUNDS=3  SMALL_COUNT=2000  SMALL_SIZE=64K  CLIENTS=16
#   RANGE_REQUESTS=50  RANGE_TAIL=1024  BLOBPROX_BIN, BENCH_RUST_LOG as in bench.sh
set -euo pipefail

SCRIPT_NAME=peers
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

set_defaults BIG_SIZE=1G MID_SIZE=256M ROUNDS=3 SMALL_COUNT=2000 SMALL_SIZE=64K CLIENTS=16 \
    RANGE_REQUESTS=50 RANGE_TAIL=1024 CURL_MAX_TIME=3600
require_positive ROUNDS SMALL_COUNT CLIENTS RANGE_REQUESTS RANGE_TAIL
BIG_BYTES="$(parse_size "$BIG_SIZE")"
MID_BYTES="$(parse_size "$MID_SIZE")"
SMALL_BYTES="$(parse_size "$SMALL_SIZE")"
((RANGE_TAIL <= BIG_BYTES)) || die "RANGE_TAIL is larger than BIG_SIZE"
PEERS=(rclone nginx blobprox)

# Installs rclone and nginx from Debian's packages when missing; the package scripts are kept
# from starting nginx's system service (on port 80) during the install.
install_peers() {
    local missing=() policy=/usr/sbin/policy-rc.d made_policy=""
    command -v rclone >/dev/null || missing+=(rclone)
    command -v nginx >/dev/null || missing+=(nginx)
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "${missing[*]} missing and no apt-get to install them"
    local sudo=()
    ((EUID == 0)) || sudo=(sudo)
    log "installing ${missing[*]} with apt-get"
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null && "${sudo[@]}" chmod 755 "$policy" && made_policy=1
    fi
    local status=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
        { "${sudo[@]}" apt-get update -q >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } ||
        status=$?
    [[ -z "$made_policy" ]] || "${sudo[@]}" rm -f "$policy"
    ((status == 0)) || die "apt-get install ${missing[*]} failed"
}

# Waits until something answers HTTP at $1 (any status).
wait_http() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT_SECS))
    until curl -sS -o /dev/null --max-time 2 "$1" 2>/dev/null; do
        ((SECONDS < deadline)) || die "nothing answers at $1 within ${HEALTH_TIMEOUT_SECS}s (logs in $WORK)"
        sleep 0.1
    done
}

start_nginx() {
    local dir="$WORK/nginx" port
    port="$(free_port)"
    mkdir -p "$dir/root" "$dir/tmp"
    {
        ((EUID == 0)) && echo "user root;"
        cat <<EOF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    client_max_body_size 0;
    client_body_temp_path $dir/tmp;
    proxy_temp_path $dir/tmp;
    fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp;
    scgi_temp_path $dir/tmp;
    server {
        listen 127.0.0.1:$port;
        root $dir/root;
        location / {
            dav_methods PUT DELETE;
            create_full_put_path on;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >>"$dir/error.log" 2>&1 &
    bg_started $!
    NGINX_PID=$!
    URL_nginx="http://127.0.0.1:$port"
    DATA_nginx="$dir/root"
    wait_http "$URL_nginx/"
}

start_rclone() {
    local dir="$WORK/rclone" port
    port="$(free_port)"
    mkdir -p "$dir/root"
    cat >"$dir/rclone.conf" <<EOF
[disk]
type = local

[crypt]
type = crypt
remote = disk:$dir/root
password = $(rclone obscure "$(head -c 24 /dev/urandom | base64)")
EOF
    rclone serve webdav crypt: --config "$dir/rclone.conf" --addr "127.0.0.1:$port" \
        --log-level ERROR >>"$dir/rclone.log" 2>&1 &
    bg_started $!
    RCLONE_PID=$!
    URL_rclone="http://127.0.0.1:$port"
    DATA_rclone="$dir/root"
    wait_http "$URL_rclone/"
}

# upload PEER FILE NAME: prints curl's time_total; blobprox's wrapped key goes to $WORK/key-NAME.
upload() {
    local peer="$1" file="$2" name="$3" out code time
    if [[ "$peer" == blobprox ]]; then
        out="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/answer" -w '%{http_code} %{time_total}' "${AUTH[@]}" \
            -F "public-keys=<$WORK/recipients.json" -F overwrite=true -F "file=@$file" \
            "$BASE/upload/bench/$name")" || die "blobprox upload of $name failed"
        read -r code time <<<"$out"
        [[ "$code" == 200 ]] || die "blobprox upload of $name answered $code: $(head -c 300 "$WORK/answer")"
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["bench"])' \
            "$WORK/answer" >"$WORK/key-$name"
    else
        local url="URL_$peer"
        out="$(curl -sS --max-time "$CURL_MAX_TIME" -o "$WORK/answer" -w '%{http_code} %{time_total}' \
            -T "$file" "${!url}/$name")" || die "$peer upload of $name failed"
        read -r code time <<<"$out"
        [[ "$code" =~ ^20[014]$ ]] || die "$peer upload of $name answered $code"
    fi
    echo "$time"
}

# download PEER NAME OUTPUT [RANGE]: prints "<status> <bytes> <time_total>".
download() {
    local peer="$1" name="$2" output="$3" range=()
    [[ -z "${4:-}" ]] || range=(-H "Range: $4")
    if [[ "$peer" == blobprox ]]; then
        curl -sS --max-time "$CURL_MAX_TIME" -o "$output" -w '%{http_code} %{size_download} %{time_total}\n' \
            "${AUTH[@]}" -H "x-blob-key: $(cat "$WORK/key-$name")" "${range[@]}" "$BASE/download/bench/$name"
    else
        local url="URL_$peer"
        curl -sS --max-time "$CURL_MAX_TIME" -o "$output" -w '%{http_code} %{size_download} %{time_total}\n' \
            "${range[@]}" "${!url}/$name"
    fi
}

# Seconds until the files a WebDAV peer wrote since $WORK/mark are on disk (fsync of each).
until_on_disk() {
    local data="DATA_$1" t0
    t0="$(now)"
    find "${!data}" -type f -newer "$WORK/mark" -exec sync {} +
    awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.3f", b - a}'
}

record() { echo "$3" >>"$WORK/m/$1.$2"; }
median() {
    [[ -s "$WORK/m/$1.$2" ]] || {
        echo ""
        return
    }
    sort -g "$WORK/m/$1.$2" | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# The peers in the order of round $1, so that none always goes first.
rotation() {
    local i n=${#PEERS[@]}
    for ((i = 0; i < n; i++)); do echo "${PEERS[$(((i + $1) % n))]}"; done
}

# big_round LABEL FILE BYTES ROUND: one timed upload (sync before, on-disk time after for the WebDAV
# peers) and one timed download per peer; downloads go to /dev/null, checked by status and size.
big_round() {
    local label="$1" file="$2" bytes="$3" round="$4" peer time status size
    for peer in $(rotation "$round"); do
        sync
        touch "$WORK/mark"
        time="$(upload "$peer" "$file" "$label")"
        record "$label-up" "$peer" "$(mbps "$bytes" "$time")"
        if [[ "$peer" != blobprox ]]; then
            record "$label-up-disk" "$peer" "$(mbps "$bytes" "$(awk -v a="$time" -v b="$(until_on_disk "$peer")" 'BEGIN {print a + b}')")"
        fi
    done
    for peer in $(rotation "$round"); do
        read -r status size time < <(download "$peer" "$label" /dev/null)
        [[ "$status" == 200 && "$size" == "$bytes" ]] || die "$peer download of $label: status $status, $size bytes"
        record "$label-down" "$peer" "$(mbps "$bytes" "$time")"
    done
}

# Untimed: each peer's copy of LABEL must have the sha256 of FILE.
check_sha() {
    local label="$1" want="$2" peer got
    for peer in "${PEERS[@]}"; do
        download "$peer" "$label" "$WORK/check" >/dev/null
        got="$(sha256sum "$WORK/check" | awk '{print $1}')"
        rm -f "$WORK/check"
        [[ "$got" == "$want" ]] || die "$peer returned $label with sha256 $got, want $want"
    done
}

random_file() {
    head -c "$2" /dev/urandom >"$1"
    sha256sum "$1" | awk '{print $1}'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
# goal TEXT VALUE MIN: a row of the goals table; VALUE at least MIN meets it.
goal() {
    local met
    met="$(awk -v v="$2" -v m="$3" 'BEGIN { print (v != "-" && v + 0 >= m) ? "yes" : "no" }')"
    echo "| $1 | ${2}× | ≥ ${3}× | $met |"
}

require_tools curl python3 sha256sum awk
python3 -c 'import aiohttp' 2>/dev/null || die "peers.py needs aiohttp: python3 -m pip install aiohttp"
install_peers
bench_prepare
mkdir -p "$WORK/data/bench" "$WORK/m"
start_server STORAGE_URL="file://$WORK/data"
fetch_recipients "$WORK/recipients.json"
start_nginx
start_rclone
log "blobprox at $BASE, nginx at $URL_nginx, rclone at $URL_rclone"

# ROUNDS interleaved uploads and downloads of a new random file of SIZE, checked: label size bytes
size_rounds() {
    local label="$1" size="$2" bytes="$3" sha
    sha="$(random_file "$WORK/$label" "$bytes")"
    for ((r = 0; r < ROUNDS; r++)); do
        log "round $((r + 1))/$ROUNDS: $size upload and download"
        big_round "$label" "$WORK/$label" "$bytes" "$r"
    done
    check_sha "$label" "$sha"
}

size_rounds big "$BIG_SIZE" "$BIG_BYTES"

log "range reads: $RANGE_REQUESTS × bytes=-$RANGE_TAIL on the $BIG_SIZE file, interleaved"
tail -c "$RANGE_TAIL" "$WORK/big" >"$WORK/tail"
for ((i = 0; i < RANGE_REQUESTS; i++)); do
    for peer in $(rotation "$i"); do
        read -r status size time < <(download "$peer" big "$WORK/got-tail" "bytes=-$RANGE_TAIL")
        [[ "$status" == 206 ]] && cmp -s "$WORK/tail" "$WORK/got-tail" ||
            die "$peer range read: status $status, $size bytes, not the file's last $RANGE_TAIL"
        record range "$peer" "$(awk -v t="$time" 'BEGIN {printf "%.3f", t * 1000}')"
    done
done

if ((MID_BYTES != BIG_BYTES)); then
    rm -f "$WORK/big"
    size_rounds mid "$MID_SIZE" "$MID_BYTES"
    rm -f "$WORK/mid"
fi
mid=mid
((MID_BYTES != BIG_BYTES)) || mid=big

for ((r = 0; r < ROUNDS; r++)); do
    for peer in $(rotation "$r"); do
        log "round $((r + 1))/$ROUNDS: $peer, $SMALL_COUNT × $SMALL_SIZE uploads, then downloads, $CLIENTS clients"
        if [[ "$peer" == blobprox ]]; then
            args=(--kind blobprox --url "$BASE" --salt "$X_SALT" --decryption-key "$X_DECRYPTION_KEY" --comparison-key "$X_COMPARISON_KEY")
        else
            url="URL_$peer"
            args=(--kind webdav --url "${!url}")
        fi
        answer="$(python3 "$REPO_ROOT/bench/peers.py" "${args[@]}" --count "$SMALL_COUNT" --size "$SMALL_BYTES" \
            --clients "$CLIENTS" --prefix "small-$r-")" || die "$peer: small-file errors: $answer"
        record small-up "$peer" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["upload_rps"])' "$answer")"
        record small-down "$peer" "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["download_rps"])' "$answer")"
    done
done

row() {
    local label="$1" metric="$2" peer
    printf '| %s |' "$label"
    for peer in "${PEERS[@]}"; do printf ' %s |' "$(median "$metric" "$peer")"; done
    echo
}
echo
machine_line
echo "$BUSY_NOTE; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "rclone $(rclone version 2>/dev/null | awk 'NR == 1 {print $2}') (crypt remote over a local directory, serve webdav), $(nginx -v 2>&1 | awk '{print $3}') (dav PUT), curl $(curl --version | awk 'NR == 1 {print $2}'), aiohttp $(python3 -c 'import aiohttp; print(aiohttp.__version__)')"
echo "medians of $ROUNDS interleaved rounds; range: $RANGE_REQUESTS requests each; every download sha256- or byte-checked; blobprox fsyncs every upload before its 200, nginx and rclone do not"
echo
echo "| | rclone crypt | nginx, plain | blobprox |"
echo "|---|---:|---:|---:|"
row "$BIG_SIZE upload, MB/s" big-up
row "$BIG_SIZE upload until on disk, MB/s" big-up-disk
row "$BIG_SIZE download, MB/s" big-down
((MID_BYTES == BIG_BYTES)) || row "$MID_SIZE download, MB/s" mid-down
row "$SMALL_COUNT × $SMALL_SIZE uploads, req/s" small-up
row "$SMALL_COUNT × $SMALL_SIZE downloads, req/s" small-down
row "\`Range: bytes=-$RANGE_TAIL\` on $BIG_SIZE, median ms" range

b() { median "$1" blobprox; }
echo
echo "| goal (issue 11) | measured | wanted | met |"
echo "|---|---:|---:|---|"
goal "$SMALL_SIZE downloads vs rclone" "$(ratio "$(b small-down)" "$(median small-down rclone)")" 1.5
goal "$SMALL_SIZE downloads vs nginx" "$(ratio "$(b small-down)" "$(median small-down nginx)")" 0.5
goal "$SMALL_SIZE uploads vs rclone" "$(ratio "$(b small-up)" "$(median small-up rclone)")" 1.2
goal "tail range: nginx median / blobprox median" "$(ratio "$(median range nginx)" "$(b range)")" 0.67
goal "$MID_SIZE download vs nginx" "$(ratio "$(b "$mid-down")" "$(median "$mid-down" nginx)")" 0.8
goal "$BIG_SIZE upload vs rclone" "$(ratio "$(b big-up)" "$(median big-up rclone)")" 3
goal "$BIG_SIZE upload vs nginx until on disk" "$(ratio "$(b big-up)" "$(median big-up-disk nginx)")" 1.0
goal "$BIG_SIZE download vs rclone" "$(ratio "$(b big-down)" "$(median big-down rclone)")" 3
read -r _ hwm < <(mem_kb)
echo
echo "blobprox peak RSS (VmHWM) over the whole run: $(kib_to_mib "$hwm") MiB"
