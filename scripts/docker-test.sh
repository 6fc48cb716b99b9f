#!/usr/bin/env bash
# Builds blobprox:latest and runs docker-compose.yaml for real, as README's "Docker" section says,
# against Azurite: keygen, then the proxy, healthy; client credentials made with the image; a round
# trip through the published port on 127.0.0.1; keys kept across `down` and `up`; the proxy's user
# not root and its root filesystem read-only.
#
# Works offline: nothing is pulled from an image registry. What is missing is installed from
# Debian's packages (docker.io, docker-compose, debootstrap); an engine is started when none runs
# (and stopped at the end); the runtime base image is made with debootstrap unless RUNTIME_IMAGE
# names one the engine already has. The image copies the binary built on this host (Dockerfile
# target `prebuilt`). Must run as root (or as a user of the docker group, with RUNTIME_IMAGE set).
#
#   BLOBPROX_BIN=target/debug/blobprox   the binary to put in the image (built when missing)
#   RUNTIME_IMAGE=debian:bookworm-slim   use this local image instead of a debootstrap one
#   DEBIAN_MIRROR=http://deb.debian.org/debian
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
passed=0

log() { echo "docker-test: $*"; }
die() {
    echo "docker-test: FAILED: $*" >&2
    exit 1
}
pass() {
    passed=$((passed + 1))
    log "ok: $*"
}
apt_install() {
    log "installing $* from Debian's packages"
    [ -n "${apt_updated:-}" ] || { apt-get update -qq && apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

work=$(mktemp -d "$repo/target/docker-test.XXXXXX")
dockerd_pid=""
compose=()
cleanup() {
    set +e
    if [ "${#compose[@]}" -gt 0 ]; then "${compose[@]}" down --remove-orphans >/dev/null 2>&1; fi
    [ -z "${AZURITE_PID:-}" ] || kill "$AZURITE_PID" 2>/dev/null
    if [ -n "$dockerd_pid" ]; then
        kill "$dockerd_pid" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# ---- the engine and compose -------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    # No NAT and no forwarding: containers reach this machine's own addresses (the published
    # port, Azurite on the bridge's address) and nothing beyond it.
    dockerd --iptables=false --ip-forward=false --pidfile "$work/dockerd.pid" \
        >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
    docker info >/dev/null 2>&1 || die "dockerd did not start: $(tail -5 "$work/dockerd.log")"
    log "started dockerd $(docker version --format '{{.Server.Version}}') (pid $dockerd_pid)"
fi
if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
else
    # Debian 12 packages compose v1 only (docker-compose 1.29), which reads this file as well.
    command -v docker-compose >/dev/null || apt_install docker-compose
    compose_cmd=(docker-compose)
fi
log "compose: $("${compose_cmd[@]}" version 2>/dev/null | head -1)"

# ---- the image --------------------------------------------------------------------------------
started=$SECONDS
if [ -n "${RUNTIME_IMAGE:-}" ]; then
    docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1 || die "no local image $RUNTIME_IMAGE"
    base=$RUNTIME_IMAGE
else
    command -v debootstrap >/dev/null || apt_install debootstrap
    base=blobprox-base:bookworm
    log "making $base with debootstrap (minbase, curl, ca-certificates)"
    debootstrap --variant=minbase --include=ca-certificates,curl bookworm "$work/rootfs" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
        die "debootstrap failed: $(tail -5 "$work/debootstrap.log")"
    # What slim images leave out too: downloaded packages, package lists, docs but copyrights.
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/* \
        "$work"/rootfs/usr/share/{man,info,locale}/*
    find "$work/rootfs/usr/share/doc" -type f ! -name copyright -delete
    tar -C "$work/rootfs" -c . | docker import - "$base" >/dev/null
    rm -rf "$work/rootfs"
fi
binary=${BLOBPROX_BIN:-target/debug/blobprox}
[ -x "$binary" ] || cargo build --quiet
mkdir -p target/docker
# Debug symbols would make up four fifths of the image.
strip -o target/docker/blobprox "$binary" 2>/dev/null || cp "$binary" target/docker/blobprox
docker build --quiet --target prebuilt --build-arg RUNTIME_IMAGE="$base" \
    --build-arg BINARY=target/docker/blobprox -t blobprox:latest . >/dev/null
pass "blobprox:latest built on $base in $((SECONDS - started)) s ($(docker image inspect -f '{{.Size}}' blobprox:latest | awk '{printf "%.0f MB", $1 / 1e6}'))"

# ---- Azurite, on the bridge's address so that containers reach it ------------------------------
python=${PYTHON:-python3}
# shellcheck source=azurite.sh
source scripts/azurite.sh
# Docker's own record of the gateway, or, where the engine leaves it empty (Debian's 20.10), the
# address of the bridge's interface.
bridge_ip="$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')"
if [ -z "$bridge_ip" ]; then
    bridge_if="$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}')"
    bridge_ip="$(ip -4 -o addr show "${bridge_if:-docker0}" | awk '{split($4, a, "/"); print a[1]; exit}')"
fi
[ -n "$bridge_ip" ] || die "no IPv4 address found for docker's bridge network"
azurite_start "$bridge_ip" "$work/azurite.log" --inMemoryPersistence
export AZURE_STORAGE_CONNECTION_STRING="$AZURITE_CONNECTION_STRING"
azurite_create_container dockertest

# ---- what README's Docker section prepares ------------------------------------------------------
if [ "$(id -u)" = 0 ]; then uid=10001 gid=10001; else uid=$(id -u) gid=$(id -g); fi
mkdir -p "$work/keys" "$work/secrets" "$work/credentials"
echo '{}' >"$work/secrets/creds.json" # unused: the connection string wins, but compose mounts it
chown -R "$uid:$gid" "$work/keys" "$work/secrets" "$work/credentials"
docker run --rm --user "$uid:$gid" -v "$work/credentials:/credentials" blobprox:latest \
    credentials -p /credentials >/dev/null
install -m 0400 -o "$uid" -g "$gid" "$work"/credentials/*_blobprox_encrypted.key "$work/secrets/api_key"
mapfile -t auth < <("$python" -c 'import glob, json, sys
c = json.load(open(glob.glob(sys.argv[1] + "/*_blobprox.json")[0]))
for name, field in (("x-decryption-key", "decryption_key"), ("x-salt", "salt"), ("x-comparison-key", "key")):
    print("-H"); print(f"{name}: {c[field]}")' "$work/credentials")
pass "credentials made with the image"

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
export BLOBPROX_UID=$uid BLOBPROX_GID=$gid BLOBPROX_KEYS_DIR=$work/keys \
    BLOBPROX_CREDS=$work/secrets/creds.json BLOBPROX_API_KEY_FILE=$work/secrets/api_key \
    BLOBPROX_PUBLISH=127.0.0.1:$port BLOBPROX_HEALTH_INTERVAL=1s \
    STORAGE_URL=https://devstoreaccount1.blob.core.windows.net
# An empty env file: a developer's .env next to docker-compose.yaml must not change the test.
: >"$work/compose.env"
compose=("${compose_cmd[@]}" -p "blobproxtest$$" -f docker-compose.yaml --env-file "$work/compose.env")

up_healthy() {
    "${compose[@]}" up -d --no-build >"$work/up.log" 2>&1 || die "compose up: $(cat "$work/up.log")"
    proxy=$("${compose[@]}" ps -q blobprox)
    for _ in $(seq 1 60); do
        [ "$(docker inspect -f '{{.State.Health.Status}}' "$proxy")" = healthy ] && return
        sleep 0.5
    done
    die "the proxy is not healthy: $(docker logs "$proxy" 2>&1 | tail -5)"
}

up_healthy
keygen=$("${compose[@]}" ps -a -q keygen)
[ "$(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$keygen")" = "exited 0" ] ||
    die "keygen did not exit 0"
[ -s "$work/keys/rsa_private_key.pem" ] || die "keygen wrote no keys"
pass "compose up: keygen exited 0 and wrote the keys, then the proxy became healthy"

host_pid=$(docker inspect -f '{{.State.Pid}}' "$proxy")
real_uid=$(awk '/^Uid:/ {print $2}' "/proc/$host_pid/status")
[ "$real_uid" = "$uid" ] && [ "$real_uid" != 0 ] || die "the proxy runs as uid $real_uid"
! "${compose[@]}" exec -T blobprox sh -c ': > /probe' 2>/dev/null || die "the root filesystem is writable"
pass "the proxy runs as uid $real_uid (not root) on a read-only root filesystem"

head -c 3000000 /dev/urandom >"$work/payload"
curl -fsS "${auth[@]}" "$url/key/public" |
    "$python" -c 'import json, sys; print(json.dumps({"me": json.load(sys.stdin)["public_key"]}))' \
        >"$work/recipients.json"
curl -fsS "${auth[@]}" -F "public-keys=<$work/recipients.json" -F "file=@$work/payload" \
    "$url/upload/dockertest/round/trip.bin" >"$work/answer.json"
blob_key=$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["decryption_keys"]["me"])' "$work/answer.json")
curl -fsS "${auth[@]}" -H "x-blob-key: $blob_key" "$url/download/dockertest/round/trip.bin" -o "$work/back"
cmp -s "$work/payload" "$work/back" || die "the download differs from the upload"
curl -fsS "$url/readyz" >/dev/null || die "/readyz is not ready"
pass "upload and download of 3 MB through $url, byte for byte; /readyz ready"

fingerprint=$(sha256sum <"$work/keys/rsa_public_key.pem")
public_key=$(curl -fsS "${auth[@]}" "$url/key/public")
"${compose[@]}" down >/dev/null 2>&1
[ -z "$("${compose[@]}" ps -a -q)" ] || die "containers left after down"
up_healthy
[ "$(sha256sum <"$work/keys/rsa_public_key.pem")" = "$fingerprint" ] || die "keygen replaced the keys"
[ "$(curl -fsS "${auth[@]}" "$url/key/public")" = "$public_key" ] || die "the public key changed"
curl -fsS "${auth[@]}" -H "x-blob-key: $blob_key" "$url/download/dockertest/round/trip.bin" -o "$work/back"
cmp -s "$work/payload" "$work/back" || die "the blob uploaded before down differs after up"
pass "down and up: same keys, and the blob uploaded before still downloads byte for byte"

"${compose[@]}" down >/dev/null 2>&1
compose=()
echo "docker-test: $passed passed, 0 failed"
