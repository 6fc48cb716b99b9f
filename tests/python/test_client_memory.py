"""The client streams: uploading a 1 GiB file keeps the client process's peak memory (RSS) far below
the file's size. The upload runs in a child process that reports its own peak RSS (VmHWM, which
starts afresh at exec; getrusage's ru_maxrss would include the parent's size at fork); the same
child uploading a tiny file gives the baseline (interpreter, requests, the client)."""

from __future__ import annotations

import json
import subprocess
import sys

from client_helpers import credentials_file
from interop import CONTAINER, clean_env

GIB = 2**30
# The whole allowance above the baseline: a few 1 MiB chunks and the sockets' buffers fit many
# times over; a client that held the file (or a fraction of it) in memory would not.
MAX_GROWTH = 64 * 2**20

_CHILD = """
import json, sys
from blobprox_client import Client
credentials, url, container, name, path, recipients = sys.argv[1:]
with Client.from_credentials_file(credentials, url) as client:
    client.upload(container, name, path, json.loads(recipients))
status = open("/proc/self/status").read()
print(int(status.split("VmHWM:")[1].split()[0]) * 1024)
"""


def _peak_rss_of_upload(proxy, credentials, name: str, path) -> int:
    recipients = json.dumps({"me": proxy.public_key_pem()})
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(credentials), proxy.url, CONTAINER, name, str(path), recipients],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_memory_stays_flat_on_a_1_gib_upload(stream_proxy, tmp_path, blob_name):
    credentials = credentials_file(stream_proxy, tmp_path)
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"x" * 1024)
    with open(big, "wb") as f:
        f.truncate(GIB)  # sparse: reads as zeros, takes no disk space
    names = [f"memory/{blob_name('.bin')}" for _ in range(2)]
    try:
        baseline = _peak_rss_of_upload(stream_proxy, credentials, names[0], small)
        peak = _peak_rss_of_upload(stream_proxy, credentials, names[1], big)
        assert stream_proxy.blob_path(names[1]).stat().st_size > GIB, "the upload did not store 1 GiB"
    finally:
        for name in names:
            stream_proxy.blob_path(name).unlink(missing_ok=True)
    print(f"\nclient peak RSS: {peak / 2**20:.1f} MiB for a 1 GiB upload, {baseline / 2**20:.1f} MiB for 1 KiB")
    assert peak - baseline < MAX_GROWTH, f"peak RSS {peak} bytes, baseline {baseline}"
