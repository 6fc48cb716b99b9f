# Azurite (Azure's storage emulator) for the tests and the benchmarks: scripts/test.sh,
# scripts/docker-test.sh and bench/azurite.sh source this file, then call
#
#   azurite_start HOST LOG STORAGE_FLAG...
#       installs azurite@$AZURITE_VERSION (default 3.37.0) from npm under target/azurite unless
#       that version is there, starts azurite-blob on a free port of HOST with the storage flags
#       given (--inMemoryPersistence, or --location DIR) and its output in LOG, and waits until it
#       answers. Sets AZURITE_PID and AZURITE_ENDPOINT, exports AZURITE_CONNECTION_STRING and
#       prints it. The caller stops AZURITE_PID.
#   azurite_create_container NAME
#       creates container NAME on the started Azurite (standard library Python; an existing one
#       is kept).
# shellcheck shell=bash

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
AZURITE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/azurite"
AZURITE_ACCOUNT=devstoreaccount1
# Azurite's well-known development account key (public, documented by Microsoft).
AZURITE_ACCOUNT_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

azurite_start() {
    local host="$1" log="$2" port installed
    shift 2
    installed="$(node -p 'require(process.argv[1]).version' "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null || true)"
    if [[ "$installed" != "$AZURITE_VERSION" || ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]]; then
        echo "azurite: installing azurite@$AZURITE_VERSION under $AZURITE_DIR" >&2
        npm install --no-audit --no-fund --loglevel=error --prefix "$AZURITE_DIR" "azurite@$AZURITE_VERSION" >&2 ||
            { echo "azurite: npm install azurite@$AZURITE_VERSION failed" >&2; return 1; }
    fi
    port="$(python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$host")"
    "$AZURITE_DIR/node_modules/.bin/azurite-blob" --blobHost "$host" --blobPort "$port" "$@" \
        --disableTelemetry --loose --skipApiVersionCheck --silent >"$log" 2>&1 &
    AZURITE_PID=$!
    for _ in $(seq 60); do
        (echo >"/dev/tcp/$host/$port") 2>/dev/null && break
        kill -0 "$AZURITE_PID" 2>/dev/null || { echo "azurite: exited; its log: $(cat "$log")" >&2; return 1; }
        sleep 0.5
    done
    if ! (echo >"/dev/tcp/$host/$port") 2>/dev/null; then
        kill "$AZURITE_PID" 2>/dev/null
        echo "azurite: did not listen on $host:$port within 30 s" >&2
        return 1
    fi
    AZURITE_ENDPOINT="http://$host:$port/$AZURITE_ACCOUNT"
    export AZURITE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=$AZURITE_ACCOUNT;AccountKey=$AZURITE_ACCOUNT_KEY;BlobEndpoint=$AZURITE_ENDPOINT;"
    echo "azurite: $AZURITE_VERSION up at $AZURITE_ENDPOINT (pid $AZURITE_PID): $AZURITE_CONNECTION_STRING" >&2
}

# Create Container, signed with the account key (Shared Key), with the standard library only.
azurite_create_container() {
    python3 - "$AZURITE_ENDPOINT" "$AZURITE_ACCOUNT" "$AZURITE_ACCOUNT_KEY" "$1" <<'EOF'
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
}
