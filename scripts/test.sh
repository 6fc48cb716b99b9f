#!/usr/bin/env bash
# Runs every check and test of blobprox: formatting, lints, the Rust unit and integration tests,
# and the Python interoperability suite. Installs what it needs (Python packages in a venv under
# target/). Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --quiet

echo "== Python interoperability tests"
venv=target/pyenv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
BLOBPROX_BIN="$PWD/target/debug/blobprox" "$venv/bin/python" -m pytest tests/python -q
