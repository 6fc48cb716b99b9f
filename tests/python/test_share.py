"""Re-sharing: a blob already in storage is given to a hospital that joins later, without being
downloaded and uploaded again. The second proxy has its own keys and its own credentials and
reads the same storage; its client only ever sees the wrapped key made for it.
"""

from __future__ import annotations

import json
import os

import pytest
import requests
from cryptography.fernet import Fernet

from interop import CONTAINER, HTTP_TIMEOUT, download, start_blobprox_made_proxy, upload


@pytest.fixture(scope="module")
def hospital_b(launcher, tmp_path_factory, proxy):
    """A second proxy on the first proxy's storage, with keys and credentials of its own."""
    return start_blobprox_made_proxy(
        launcher, tmp_path_factory, "hospital-b", extra_env={"STORAGE_URL": proxy.datadir.as_uri()}
    )


def share(sharer, name: str, wrapped: str, recipients: dict[str, str]) -> requests.Response:
    """POST /share as a plain `requests` client would: both fields in an urlencoded form."""
    return requests.post(
        f"{sharer.url}/share/{CONTAINER}/{name}",
        headers=sharer.headers,
        data={"decryption-key": wrapped, "public-keys": json.dumps(recipients)},
        timeout=HTTP_TIMEOUT,
    )


def test_a_python_written_fernet_blob_is_shared_to_a_second_proxy(proxy, hospital_b, blob_name):
    name = blob_name(".bin")
    plaintext = os.urandom(50_000)
    fernet_key = Fernet.generate_key()
    path = proxy.blob_path(name)
    path.write_bytes(Fernet(fernet_key).encrypt(plaintext))
    stored = path.read_bytes()

    response = share(proxy, name, proxy.wrap(fernet_key), {"hospital-b": hospital_b.public_key_pem()})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == body["file_name"] == name
    wrapped_for_b = body["decryption_keys"]["hospital-b"]
    assert body["keys"]["hospital-b"] == wrapped_for_b
    # A Python proxy holding hospital B's private key could open the blob too.
    assert hospital_b.unwrap(wrapped_for_b) == fernet_key

    got = download(hospital_b.url, hospital_b.headers, CONTAINER, name, wrapped_for_b)
    assert got.status_code == 200, got.text
    assert got.content == plaintext
    assert path.read_bytes() == stored, "sharing never rewrites the blob"


def test_a_blobprox_written_blob_is_shared_and_the_first_key_stays_private(proxy, hospital_b, blob_name):
    name = blob_name(".txt")
    plaintext = b"shared later\n" * 1000
    wrapped = upload(proxy.url, proxy.headers, CONTAINER, name, plaintext, proxy.public_key_pem())
    # Hospital B cannot use the key wrapped for the first proxy...
    refused = download(hospital_b.url, hospital_b.headers, CONTAINER, name, wrapped)
    assert refused.status_code == 400, refused.text
    # ...nor ask its own proxy to share with it what it cannot open.
    refused = share(hospital_b, name, wrapped, {"me": hospital_b.public_key_pem()})
    assert refused.status_code == 400, refused.text

    response = share(proxy, name, wrapped, {"hospital-b": hospital_b.public_key_pem()})
    assert response.status_code == 200, response.text
    got = download(hospital_b.url, hospital_b.headers, CONTAINER, name, response.json()["keys"]["hospital-b"])
    assert got.status_code == 200, got.text
    assert got.content == plaintext


def test_share_refusals_carry_a_detail(proxy, blob_name):
    name = blob_name(".txt")
    wrapped = upload(proxy.url, proxy.headers, CONTAINER, name, b"x", proxy.public_key_pem())
    other = upload(proxy.url, proxy.headers, CONTAINER, blob_name(".txt"), b"y", proxy.public_key_pem())
    cases = [
        (share(proxy, name, other, {"x": proxy.public_key_pem()}), 403),
        (share(proxy, "missing.txt", wrapped, {"x": proxy.public_key_pem()}), 404),
        (share(proxy, name, wrapped, {"x": "not a pem"}), 400),
        (requests.post(f"{proxy.url}/share/{CONTAINER}/{name}", data={"decryption-key": wrapped},
                       headers=proxy.headers, timeout=HTTP_TIMEOUT), 422),
        (requests.post(f"{proxy.url}/share/{CONTAINER}/{name}", data={"decryption-key": wrapped},
                       timeout=HTTP_TIMEOUT), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert "detail" in response.json()
