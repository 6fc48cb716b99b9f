"""(b) What blobprox writes opens with Python's `cryptography`, as the Python proxy would open it.

The wrapped key returned by an upload is RSA-OAEP (MGF1-SHA256, SHA256, no label) of the
44-character Fernet key text; the stored file is a Fernet token that key decrypts.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from interop import CONTAINER, OAEP, download, upload_body


def _upload(proxy, name: str, data: bytes, recipients: dict[str, str]) -> dict:
    return upload_body(proxy.url, proxy.headers, CONTAINER, name, data, recipients)


def test_wrapped_key_opens_with_python_rsa_oaep_and_fernet(proxy, blob_name):
    plaintext = b"The quick brown fox jumps over the lazy dog. " * 50
    name = blob_name(".txt")
    body = _upload(proxy, name, plaintext, {"me": proxy.public_key_pem()})
    wrapped = body["decryption_keys"]["me"]

    key_text = proxy.private_key().decrypt(base64.b64decode(wrapped, validate=True), OAEP)
    assert len(key_text) == 44, key_text
    raw = base64.urlsafe_b64decode(key_text)
    assert len(raw) == 32
    # Keys blobprox generates use the URL-safe alphabet, as Fernet specifies.
    assert key_text == base64.urlsafe_b64encode(raw)

    stored = proxy.blob_path(name).read_bytes()
    assert stored.startswith(b"gAAAAA"), stored[:16]
    assert plaintext not in stored
    assert b"quick brown fox" not in stored
    assert Fernet(key_text).decrypt(stored) == plaintext


def test_every_recipient_gets_the_same_data_key(proxy, blob_name):
    """A second recipient (a key the proxy does not hold) can open the blob in Python too."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    plaintext = b"shared with a partner clinic\n"
    name = blob_name(".txt")
    body = _upload(proxy, name, plaintext, {"me": proxy.public_key_pem(), "partner": other_pem})
    assert set(body["decryption_keys"]) == {"me", "partner"}
    assert body["keys"] == body["decryption_keys"]

    mine = proxy.unwrap(body["decryption_keys"]["me"])
    theirs = other.decrypt(base64.b64decode(body["decryption_keys"]["partner"], validate=True), OAEP)
    assert mine == theirs
    assert Fernet(theirs).decrypt(proxy.blob_path(name).read_bytes()) == plaintext


def test_nested_blob_name_is_stored_under_its_path(proxy, blob_name):
    plaintext = b"nested\n"
    name = f"reports/2024/{blob_name('.txt')}"
    body = _upload(proxy, name, plaintext, {"me": proxy.public_key_pem()})
    assert body["filename"] == name
    key_text = proxy.unwrap(body["decryption_keys"]["me"])
    assert Fernet(key_text).decrypt(proxy.blob_path(name).read_bytes()) == plaintext

    response = download(proxy.url, proxy.headers, CONTAINER, name, body["decryption_keys"]["me"])
    assert response.status_code == 200, response.text
    assert response.content == plaintext
    assert response.headers["Content-Disposition"] == f"attachment; filename={name}"
