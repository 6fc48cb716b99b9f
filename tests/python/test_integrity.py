"""(e) Damaged, missing and wrongly keyed blobs are refused, never sent as if good."""

from __future__ import annotations

import os

import pytest
import requests
from cryptography.fernet import Fernet

from interop import CONTAINER, download, download_both_ways, upload

PLAINTEXT = b"confidential lab results: all values within range\n" * 40


def _upload(proxy, name: str, data: bytes) -> str:
    return upload(proxy.url, proxy.headers, CONTAINER, name, data, proxy.public_key_pem())


def _flip_middle(token: bytes) -> bytes:
    i = len(token) // 2
    replacement = b"B" if token[i : i + 1] == b"A" else b"A"
    return token[:i] + replacement + token[i + 1 :]


CORRUPTIONS = {
    "flip-middle-char": _flip_middle,
    "truncated": lambda token: token[: len(token) - 20],
    "flip-last-hmac-char": lambda token: token[:-5] + (b"B" if token[-5:-4] == b"A" else b"A") + token[-4:],
    "plaintext-not-encrypted": lambda token: PLAINTEXT,
}


def _assert_refused(response: requests.Response, statuses=(403, 502)) -> None:
    assert response.status_code in statuses, f"{response.status_code} {response.text[:300]!r}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert b"confidential lab results" not in response.content


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_damaged_blob_is_refused(proxy, blob_name, corruption):
    name = blob_name(".txt")
    wrapped = _upload(proxy, name, PLAINTEXT)
    path = proxy.blob_path(name)
    token = path.read_bytes()
    damaged = CORRUPTIONS[corruption](token)
    assert damaged != token
    path.write_bytes(damaged)

    for _, response in download_both_ways(proxy.url, proxy.headers, CONTAINER, name, wrapped):
        _assert_refused(response)


def test_python_written_blob_tampered_is_refused(proxy, blob_name):
    name = blob_name(".txt")
    key = Fernet.generate_key()
    proxy.blob_path(name).write_bytes(_flip_middle(Fernet(key).encrypt(PLAINTEXT)))
    _assert_refused(download(proxy.url, proxy.headers, CONTAINER, name, proxy.wrap(key)))


def test_large_blob_tampered_near_the_end_never_ends_cleanly(proxy, blob_name):
    """Damage found after the first body byte must abort the connection, not end it cleanly."""
    data = os.urandom(3 * 1024 * 1024)
    name = blob_name(".bin")
    wrapped = _upload(proxy, name, data)
    path = proxy.blob_path(name)
    token = path.read_bytes()
    i = len(token) - 1000
    path.write_bytes(token[:i] + (b"B" if token[i : i + 1] == b"A" else b"A") + token[i + 1 :])
    try:
        response = download(proxy.url, proxy.headers, CONTAINER, name, wrapped, by="header")
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
        return  # aborted mid-body: acceptable
    _assert_refused(response)
    assert response.content != data


def test_key_of_another_blob_is_refused(proxy, blob_name):
    name_a, name_b = blob_name(".txt"), blob_name(".txt")
    _upload(proxy, name_a, PLAINTEXT)
    wrapped_b = _upload(proxy, name_b, b"another file\n")
    _assert_refused(download(proxy.url, proxy.headers, CONTAINER, name_a, wrapped_b), statuses=(400, 403))


def test_key_this_proxy_cannot_unwrap_is_refused(proxy, blob_name):
    name = blob_name(".txt")
    _upload(proxy, name, PLAINTEXT)
    for bad in ("not base64 at all!", "QUJD", ""):
        # A bad key in the header; the empty one as an empty `decryption-key` field.
        response = download(proxy.url, proxy.headers, CONTAINER, name, bad, by="header" if bad else "field")
        _assert_refused(response, statuses=(400, 403))


def test_missing_blob_is_404(proxy, blob_name):
    wrapped = proxy.wrap(Fernet.generate_key())
    name = blob_name(".txt")
    for how, response in download_both_ways(proxy.url, proxy.headers, CONTAINER, name, wrapped):
        assert response.status_code == 404, f"{how}: {response.text}"
        assert response.json() == {"detail": "Blob not found"}, how


def test_missing_container_is_404_blob_not_found(proxy):
    wrapped = proxy.wrap(Fernet.generate_key())
    response = download(proxy.url, proxy.headers, "no-such-container", "file.txt", wrapped)
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Blob not found"}
