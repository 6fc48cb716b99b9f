"""(c) Blobs written the way the Python proxy wrote them download through blobprox.

The Python proxy encrypted a file with `Fernet(key).encrypt(data)`, stored the token, and handed
out base64(RSA-OAEP-SHA256(key TEXT)). Its key generator wrote `symmetric_key.key` in the STANDARD
base64 alphabet (`+`, `/`), which Python's Fernet accepts; blobprox must accept it too.
"""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import Fernet

from interop import CONTAINER, download_both_ways


def _standard_alphabet_key() -> tuple[bytes, bytes]:
    """32 random bytes whose standard base64 differs from the URL-safe one (has '+' or '/')."""
    while True:
        raw = os.urandom(32)
        standard = base64.b64encode(raw)
        if b"+" in standard or b"/" in standard:
            return raw, standard


def _store_python_blob(proxy, name: str, fernet_key: bytes, plaintext: bytes) -> None:
    path = proxy.blob_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(Fernet(fernet_key).encrypt(plaintext))


def _download_both_ways(proxy, name: str, wrapped: str):
    return download_both_ways(proxy.url, proxy.headers, CONTAINER, name, wrapped)


@pytest.mark.parametrize("suffix", [".txt", ".bin"])
def test_python_fernet_blob_downloads(proxy, blob_name, suffix):
    plaintext = os.urandom(3000) if suffix == ".bin" else "Python-written blob\nzweite Zeile\n".encode()
    name = blob_name(suffix)
    key = Fernet.generate_key()
    _store_python_blob(proxy, name, key, plaintext)
    wrapped = proxy.wrap(key)

    for how, response in _download_both_ways(proxy, name, wrapped):
        assert response.status_code == 200, f"{how}: {response.status_code} {response.text}"
        assert response.content == plaintext, how
        assert response.headers["Content-Disposition"] == f"attachment; filename={name}", how
        expected_type = "text/plain; charset=utf-8" if suffix == ".txt" else "application/octet-stream"
        assert response.headers["Content-Type"] == expected_type, how


def test_standard_alphabet_key_text_is_accepted(proxy, blob_name):
    """The wrapped key text uses '+' and '/', as the original's symmetric_key.key did."""
    raw, standard_text = _standard_alphabet_key()
    plaintext = b"encrypted with a key from the original key generator\n" * 20
    name = blob_name(".txt")
    _store_python_blob(proxy, name, base64.urlsafe_b64encode(raw), plaintext)
    # Python's Fernet itself accepts the standard-alphabet text for the same key.
    assert Fernet(standard_text).decrypt(proxy.blob_path(name).read_bytes()) == plaintext
    wrapped = proxy.wrap(standard_text)

    for how, response in _download_both_ways(proxy, name, wrapped):
        assert response.status_code == 200, f"{how}: {response.status_code} {response.text}"
        assert response.content == plaintext, how


def test_python_blob_with_unicode_content_and_nested_name(proxy, blob_name):
    plaintext = "日本語のテキスト — ✓\n".encode("utf-8") * 100
    name = f"legacy/dir/{blob_name('.txt')}"
    key = Fernet.generate_key()
    _store_python_blob(proxy, name, key, plaintext)
    for how, response in _download_both_ways(proxy, name, proxy.wrap(key)):
        assert response.status_code == 200, f"{how}: {response.text}"
        assert response.content == plaintext, how
        assert response.text == plaintext.decode("utf-8"), how
