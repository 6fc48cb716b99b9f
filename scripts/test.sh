#!/usr/bin/env bash
# Runs every check and test of blobprox: formatting, lints, the Rust unit and integration tests
# (on the local backend, then the storage-facing suites again on Azurite), and the Python
# interoperability suite. Installs what it needs: Azurite from npm under target/azurite, Python
# packages in a virtualenv under target/pyenv. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test (local backend)"
unset BLOBPROX_TEST_AZURE_CONNECTION_STRING
cargo test --quiet

venv=target/pyenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./clients/python

echo "== Azurite (Azure's storage emulator) on a free loopback port"
# shellcheck source=azurite.sh
source scripts/azurite.sh
trap 'kill "${AZURITE_PID:-}" 2>/dev/null || true' EXIT
azurite_start 127.0.0.1 target/azurite.log --inMemoryPersistence
export BLOBPROX_TEST_AZURE_CONNECTION_STRING="$AZURITE_CONNECTION_STRING"

echo "== cargo test (Azurite backend: API, ranges, hostile input, storage semantics and faults, key lifecycle)"
cargo test --quiet --test integration -- api:: ranges:: hostile:: storage_semantics:: lifecycle::

echo "== Python client: type check (mypy --strict)"
"$venv/bin/python" -m mypy --strict --cache-dir target/mypy-cache clients/python/src

# The TLS tests drive HTTP/2 with curl.
command -v curl >/dev/null || { apt-get install -y curl || { apt-get update && apt-get install -y curl; }; }
echo "== Python interoperability tests (cryptography, requests, pyarrow/fsspec, Azure SDK)"
BLOBPROX_BIN="$PWD/target/debug/blobprox" "$venv/bin/python" -m pytest tests/python -q

echo "== Replicas: three blobprox on one Azurite behind haproxy, one killed mid-load (tests/replicas.py)"
if ! command -v haproxy >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
BLOBPROX_BIN="$PWD/target/debug/blobprox" "$venv/bin/python" tests/replicas.py

echo "== Kubernetes manifests, validated offline against the API schemas (no cluster runs here)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml

echo "== Docker: image built offline, docker-compose.yaml run for real (scripts/docker-test.sh)"
PYTHON="$venv/bin/python" scripts/docker-test.sh
