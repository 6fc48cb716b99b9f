"""(f) A larger file survives the round trip, and the stored token still opens in Python."""

from __future__ import annotations

import hashlib
import os

from cryptography.fernet import Fernet

from interop import CONTAINER, download_both_ways, upload

SIZE = 5 * 1024 * 1024


def test_five_mib_round_trip(proxy, tmp_path, blob_name):
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    name = f"big/{blob_name('.bin')}"

    wrapped = upload(proxy.url, proxy.headers, CONTAINER, name, path, proxy.public_key_pem())

    for how, response in download_both_ways(proxy.url, proxy.headers, CONTAINER, name, wrapped, stream=True):
        assert response.status_code == 200, f"{how}: {response.text}"
        assert response.headers["Content-Type"] == "application/octet-stream", how
        h, n = hashlib.sha256(), 0
        for chunk in response.iter_content(chunk_size=256 * 1024):
            h.update(chunk)
            n += len(chunk)
        assert n == SIZE, how
        assert h.hexdigest() == digest, how

    stored = proxy.blob_path(name).read_bytes()
    assert data[:4096] not in stored
    assert hashlib.sha256(Fernet(proxy.unwrap(wrapped)).decrypt(stored)).hexdigest() == digest
