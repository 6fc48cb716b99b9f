"""(f) A larger file survives the round trip, and the stored token still opens in Python."""

from __future__ import annotations

import hashlib
import json
import os

import requests
from cryptography.fernet import Fernet

from interop import CONTAINER, HTTP_TIMEOUT

SIZE = 5 * 1024 * 1024


def test_five_mib_round_trip(proxy, tmp_path, blob_name):
    data = os.urandom(SIZE)
    digest = hashlib.sha256(data).hexdigest()
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    name = f"big/{blob_name('.bin')}"

    with open(path, "rb") as f:
        response = requests.post(
            f"{proxy.url}/upload/{CONTAINER}/{name}",
            headers=proxy.headers,
            files={"file": f, "public-keys": json.dumps({"me": proxy.public_key_pem()})},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    wrapped = response.json()["decryption_keys"]["me"]

    for how, kwargs in (
        ("decryption-key field", {"headers": proxy.headers, "data": {"decryption-key": wrapped}}),
        ("x-blob-key header", {"headers": {**proxy.headers, "x-blob-key": wrapped}}),
    ):
        response = requests.get(
            f"{proxy.url}/download/{CONTAINER}/{name}", stream=True, timeout=HTTP_TIMEOUT, **kwargs
        )
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
