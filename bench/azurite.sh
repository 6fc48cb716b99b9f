#!/usr/bin/env bash
# bench.sh against Azurite (Azure's storage emulator) instead of a local directory: installs
# Azurite from npm under target/azurite (as scripts/test.sh does), starts it on a free loopback
# port with its data in a temp dir (not --inMemoryPersistence: 1 GiB blobs would sit in Node's
# heap), creates the container "bench", and runs bench/bench.sh with
# AZURE_STORAGE_CONNECTION_STRING and Azurite's CPU sampled next to blobprox's. See bench/README.md.
#
#   SIZES="64M 1G"  FORMATS="stream fernet"  RANGE_SIZE=1G  REPEAT=1   as in bench.sh
#   AZURITE_BENCH=memory.sh   run bench/memory.sh (peak memory of concurrent uploads) instead
#   AZURITE_VERSION=3.37.0
set -euo pipefail

SCRIPT_NAME=azurite
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
AZURITE_DIR="$REPO_ROOT/target/azurite"
AZURITE_BIN="$AZURITE_DIR/node_modules/.bin/azurite-blob"
# Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT=devstoreaccount1
ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

require_tools npm node python3 curl

installed="$(node -p 'require(process.argv[1]).version' "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null || true)"
if [[ "$installed" != "$AZURITE_VERSION" || ! -x "$AZURITE_BIN" ]]; then
    log "installing azurite@$AZURITE_VERSION under $AZURITE_DIR"
    npm install --no-audit --no-fund --loglevel=error --prefix "$AZURITE_DIR" "azurite@$AZURITE_VERSION" >&2 ||
        die "npm install azurite@$AZURITE_VERSION failed"
fi

bench_workdir
mkdir -p "$WORK/azurite"
AZ_PORT="$(free_port)"
"$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --location "$WORK/azurite" \
    --disableTelemetry --loose --skipApiVersionCheck --silent >"$WORK/azurite.log" 2>&1 &
AZ_PID=$!
bg_started "$AZ_PID"
for _ in $(seq 60); do
    (echo >"/dev/tcp/127.0.0.1/$AZ_PORT") 2>/dev/null && break
    kill -0 "$AZ_PID" 2>/dev/null || die "Azurite exited; its log: $(cat "$WORK/azurite.log")"
    sleep 0.5
done
(echo >"/dev/tcp/127.0.0.1/$AZ_PORT") 2>/dev/null || die "Azurite did not listen on $AZ_PORT within 30 s"
ENDPOINT="http://127.0.0.1:$AZ_PORT/$ACCOUNT"
log "Azurite $AZURITE_VERSION up at $ENDPOINT (pid $AZ_PID), data in $WORK/azurite"

# Create Container, signed with the account key (Shared Key), with the standard library only.
python3 - "$ENDPOINT" "$ACCOUNT" "$ACCOUNT_KEY" bench <<'EOF' || die "creating the container failed"
import base64, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request
from email.utils import formatdate
endpoint, account, key, container = sys.argv[1:5]
url = f"{endpoint}/{container}?restype=container"
headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-12-02"}
path = urllib.parse.urlparse(url).path
# VERB, Content-Encoding, -Language, -Length ("" for 0), -MD5, -Type, Date, If-*, Range; then the
# x-ms- headers and the resource. urllib would add a form Content-Type to a PUT: set one.
to_sign = "\n".join(["PUT", "", "", "", "", "application/octet-stream"] + [""] * 6
                    + [f"{k}:{v}" for k, v in sorted(headers.items())]
                    + [f"/{account}{path}\nrestype:container"])
signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
headers["Authorization"] = f"SharedKey {account}:{signature}"
headers["Content-Type"] = "application/octet-stream"
request = urllib.request.Request(url, method="PUT", headers=headers, data=b"")
try:
    with urllib.request.urlopen(request) as answer:
        print(f"azurite: container {container} created (HTTP {answer.status})", file=sys.stderr)
except urllib.error.HTTPError as error:
    if error.code != 409:  # already exists
        print(f"HTTP {error.code}: {error.read()[:500]!r}", file=sys.stderr)
        sys.exit(1)
EOF

export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$ACCOUNT_KEY;BlobEndpoint=$ENDPOINT;"
unset STORAGE_URL
status=0
SIZES="${SIZES:-64M 1G}" BENCH_WATCH="azurite=$AZ_PID" TMPDIR="$WORK" "$REPO_ROOT/bench/${AZURITE_BENCH:-bench.sh}" || status=$?
echo
echo "Azurite $AZURITE_VERSION (node $(node --version)), --location on $(df -P "$WORK" | awk 'NR == 2 {print $1}'):" \
    "peak RSS $(awk '/^VmHWM:/ {printf "%.1f MiB", $2 / 1024}' "/proc/$AZ_PID/status" 2>/dev/null || echo unknown)," \
    "CPU time $(awk -v t="$(cpu_ticks "$AZ_PID")" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f s", t / hz}')," \
    "data dir at the end $(du -sh "$WORK/azurite" | awk '{print $1}')"
exit "$status"
