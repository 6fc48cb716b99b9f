"""(d) Key files and credentials made the original way, by Python, drive a blobprox server.

The original's key generator wrote the private key with `cryptography` in TraditionalOpenSSL
(PKCS#1, "BEGIN RSA PRIVATE KEY") format, the public key as SubjectPublicKeyInfo, and
`symmetric_key.key` as standard base64. Its credential generator made API_KEY with PBKDF2 and Fernet.
"""

from __future__ import annotations

import base64
import os

import pytest
import requests
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from interop import CONTAINER, HTTP_TIMEOUT, auth_headers, download, download_both_ways, fetch_public_key, upload


def python_keygen(keydir) -> None:
    keydir.mkdir(parents=True)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keydir / "rsa_private_key.pem").write_bytes(
        private.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.TraditionalOpenSSL,
            encryption_algorithm=serialization.NoEncryption(),
        )
    )
    (keydir / "rsa_public_key.pem").write_bytes(
        private.public_key().public_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )
    )
    # Standard alphabet, and make sure it really uses '+' or '/' so the test means something.
    while True:
        symmetric = base64.b64encode(os.urandom(32))
        if b"+" in symmetric or b"/" in symmetric:
            break
    (keydir / "symmetric_key.key").write_bytes(symmetric)


def python_credentials() -> tuple[dict, str]:
    salt = os.urandom(16).hex()
    decryption_key = Fernet.generate_key()
    key = Fernet.generate_key()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt.encode(), iterations=100000)
    derived = base64.urlsafe_b64encode(kdf.derive(decryption_key))
    api_key = Fernet(derived).encrypt(key)
    client = {"salt": salt, "decryption_key": decryption_key.decode(), "key": key.decode()}
    return client, api_key.decode()


@pytest.fixture(scope="module")
def python_proxy(launcher, tmp_path_factory):
    base = tmp_path_factory.mktemp("python-made")
    keydir = base / "keys"
    python_keygen(keydir)
    assert (keydir / "rsa_private_key.pem").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    client, api_key = python_credentials()
    return launcher.start(
        keydir=keydir,
        api_key=api_key,
        headers=auth_headers(client),
        client=client,
        name="python-made-server",
    )


def test_public_key_is_the_python_written_one(python_proxy):
    served = fetch_public_key(python_proxy.url, python_proxy.headers)
    assert served.startswith("-----BEGIN PUBLIC KEY-----")
    on_disk = (python_proxy.keydir / "rsa_public_key.pem").read_bytes().decode("ascii")
    assert served == on_disk
    # And it is the public half of the PKCS#1 private key.
    private = python_proxy.private_key()
    assert serialization.load_pem_public_key(served.encode()).public_numbers() == private.public_key().public_numbers()


def test_python_made_credentials_are_accepted_and_others_refused(python_proxy, proxy):
    fetch_public_key(python_proxy.url, python_proxy.headers)  # accepted: 200
    # The other server's (blobprox-made) credentials do not open this one.
    response = requests.get(f"{python_proxy.url}/key/public", headers=proxy.headers, timeout=HTTP_TIMEOUT)
    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication failed"}


def test_round_trip_with_python_made_keys(python_proxy, tmp_path, blob_name):
    url, headers = python_proxy.url, python_proxy.headers
    plaintext = b"round trip through Python-made keys\n" * 100
    path = tmp_path / "doc.txt"
    path.write_bytes(plaintext)
    name = blob_name(".txt")
    wrapped = upload(url, headers, CONTAINER, name, path, fetch_public_key(url, headers))

    # The PKCS#1 key file opens the wrapped key in Python, and that key opens the stored token.
    key_text = python_proxy.unwrap(wrapped)
    assert len(key_text) == 44
    assert Fernet(key_text).decrypt(python_proxy.blob_path(name).read_bytes()) == plaintext

    for how, response in download_both_ways(url, headers, CONTAINER, name, wrapped):
        assert response.status_code == 200, f"{how}: {response.text}"
        assert response.content == plaintext, how


def test_blob_under_the_original_static_key_downloads(python_proxy, blob_name):
    """The original encrypted every blob with symmetric_key.key (standard alphabet) and wrapped
    that text; such a blob written by Python opens through blobprox with the same key files."""
    symmetric_text = (python_proxy.keydir / "symmetric_key.key").read_bytes().strip()
    plaintext = b"written by the original proxy with its static key\n"
    name = blob_name(".txt")
    python_proxy.blob_path(name).write_bytes(Fernet(symmetric_text).encrypt(plaintext))
    wrapped = python_proxy.wrap(symmetric_text)
    response = download(python_proxy.url, python_proxy.headers, CONTAINER, name, wrapped)
    assert response.status_code == 200, response.text
    assert response.content == plaintext


def test_static_data_key_mode_uses_the_standard_alphabet_file(launcher, python_proxy, blob_name):
    """With STATIC_DATA_KEY=true (the original's behaviour) the standard-alphabet
    symmetric_key.key is the data key, and Python can open the stored token with the file's text."""
    static = launcher.start(
        keydir=python_proxy.keydir,
        api_key=python_proxy.api_key,
        headers=python_proxy.headers,
        client=python_proxy.client,
        extra_env={"STATIC_DATA_KEY": "true"},
        name="python-made-static",
    )
    plaintext = b"static key mode\n"
    name = blob_name(".txt")
    key_text = static.unwrap(upload(static.url, static.headers, CONTAINER, name, plaintext, static.public_key_pem()))
    symmetric_text = (static.keydir / "symmetric_key.key").read_bytes().strip()
    assert base64.b64decode(key_text, altchars=b"-_") == base64.b64decode(symmetric_text)
    assert Fernet(symmetric_text).decrypt(static.blob_path(name).read_bytes()) == plaintext
