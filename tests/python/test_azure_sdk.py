"""(d) blobprox on Azure Blob Storage, checked with Microsoft's own Python SDK (`azure-storage-blob`).

What blobprox stores must be, seen through the SDK, an ordinary block blob holding ciphertext only,
with no staging leftovers; what the Python proxy stored with the SDK must download through
blobprox; missing containers and blobs, and credentials the storage refuses, must give the
contract's statuses (never 500).

Environment:
  BLOBPROX_TEST_AZURE_CONNECTION_STRING  an account-key connection string for an Azure Blob service
      (Azurite in CI: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=...;
      BlobEndpoint=http://127.0.0.1:<port>/devstoreaccount1;`). Unset: these tests are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.fernet import Fernet

from interop import HTTP_TIMEOUT, Proxy, download, post_upload, start_blobprox_made_proxy

try:
    from azure.storage.blob import BlobServiceClient, BlobType
except ImportError as error:  # reported by the fixture: a failure when Azure tests are asked for
    BlobServiceClient = BlobType = None
    _SDK_IMPORT_ERROR: ImportError | None = error
else:
    _SDK_IMPORT_ERROR = None

CONNECTION_STRING_VAR = "BLOBPROX_TEST_AZURE_CONNECTION_STRING"
STAGING_PREFIX = ".blobprox-staging/"
# How long staging leftovers may take to disappear after an upload has been answered.
CLEANUP_WAIT_SECS = 5.0
# The refusal blobprox reports when the storage rejects its own credentials.
CREDENTIALS_REFUSED = "storage refused the proxy's credentials"


def _unique_container(prefix: str = "blobprox-sdk") -> str:
    """A container name nobody else uses (Azure rules: lowercase, digits, single hyphens)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _with_account_key(connection_string: str, account_key: str) -> str:
    """The same connection string with its AccountKey replaced."""
    pairs = [part for part in connection_string.split(";") if part.strip()]
    replaced = []
    for part in pairs:
        name, _, _ = part.partition("=")
        replaced.append(f"AccountKey={account_key}" if name.strip().lower() == "accountkey" else part)
    assert replaced != pairs, "the connection string has no AccountKey to replace"
    return ";".join(replaced) + ";"


@pytest.fixture(scope="session")
def azure_connection_string() -> str:
    value = os.environ.get(CONNECTION_STRING_VAR, "").strip()
    if not value:
        pytest.skip(
            f"{CONNECTION_STRING_VAR} is not set: no Azure Blob service (Azurite) to test against "
            "(scripts/test.sh starts Azurite and sets it)"
        )
    if _SDK_IMPORT_ERROR is not None:
        pytest.fail(
            f"{CONNECTION_STRING_VAR} is set but the Azure SDK cannot be imported ({_SDK_IMPORT_ERROR}): "
            "pip install -r tests/python/requirements.txt",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def azure_service(azure_connection_string):
    return BlobServiceClient.from_connection_string(azure_connection_string)


@pytest.fixture(scope="session")
def azure_container(azure_service):
    """A fresh container, made with the SDK, for the whole session; deleted at the end."""
    container = azure_service.create_container(_unique_container())
    yield container
    container.delete_container()


@pytest.fixture
def fresh_container(azure_service):
    """A fresh container for one test, so that it can check the container's whole listing."""
    container = azure_service.create_container(_unique_container("blobprox-one"))
    yield container
    container.delete_container()


def _start_azure_proxy(launcher, tmp_path_factory, name: str, connection_string: str, blob_format: str) -> Proxy:
    return start_blobprox_made_proxy(
        launcher,
        tmp_path_factory,
        name,
        extra_env={"AZURE_STORAGE_CONNECTION_STRING": connection_string, "BLOB_FORMAT": blob_format},
    )


@pytest.fixture(scope="session")
def azure_stream_proxy(launcher, tmp_path_factory, azure_connection_string, azure_container) -> Proxy:
    """blobprox on the Azure account, writing the streaming format; its container is `azure_container`."""
    proxy = _start_azure_proxy(launcher, tmp_path_factory, "azure-stream", azure_connection_string, "stream")
    proxy.container = azure_container.container_name
    return proxy


@pytest.fixture(scope="session")
def azure_fernet_proxy(launcher, tmp_path_factory, azure_connection_string, azure_container) -> Proxy:
    """blobprox on the Azure account, writing Fernet tokens as the Python proxy did."""
    proxy = _start_azure_proxy(launcher, tmp_path_factory, "azure-fernet", azure_connection_string, "fernet")
    proxy.container = azure_container.container_name
    return proxy


@pytest.fixture(params=["stream", "fernet"])
def azure_proxy(request) -> Proxy:
    return request.getfixturevalue(f"azure_{request.param}_proxy")


@pytest.fixture(scope="session")
def azure_wrong_key_proxy(launcher, tmp_path_factory, azure_connection_string, azure_container) -> Proxy:
    """blobprox with the right account and endpoint but an account key the storage refuses."""
    wrong_key = base64.b64encode(os.urandom(64)).decode("ascii")
    proxy = _start_azure_proxy(
        launcher,
        tmp_path_factory,
        "azure-wrong-key",
        _with_account_key(azure_connection_string, wrong_key),
        "stream",
    )
    proxy.container = azure_container.container_name
    return proxy


def _upload(proxy: Proxy, container: str, name: str, data: bytes, *, overwrite: bool | None = None) -> requests.Response:
    fields = {} if overwrite is None else {"overwrite": str(overwrite).lower()}
    return post_upload(proxy.url, proxy.headers, container, name, data, proxy.public_key_pem(), **fields)


def _download(proxy: Proxy, container: str, name: str, wrapped: str, *, by: str = "field") -> requests.Response:
    return download(proxy.url, proxy.headers, container, name, wrapped, by=by)


def _detail(response: requests.Response):
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        f"{response.status_code} with Content-Type {response.headers.get('Content-Type')!r}: {response.text!r}"
    )
    body = response.json()
    assert set(body) >= {"detail"}, body
    return body["detail"]


def _blob_names(container) -> list[str]:
    return sorted(blob.name for blob in container.list_blobs())


def _settled_names(container, expected: list[str]) -> list[str]:
    """The container's blob names once they equal `expected`, or after CLEANUP_WAIT_SECS."""
    deadline = time.monotonic() + CLEANUP_WAIT_SECS
    while True:
        names = _blob_names(container)
        if names == sorted(expected) or time.monotonic() > deadline:
            return names
        time.sleep(0.2)


# 9 MiB: more than one 8 MiB block, so blobprox commits a list of several blocks.
@pytest.mark.parametrize("size", [1500, 9 * 1024 * 1024 + 123], ids=["small", "two-blocks"])
def test_upload_is_a_plain_block_blob_of_ciphertext(azure_proxy, fresh_container, blob_name, size, request):
    marker = b"PLAINTEXT-MARKER-blobprox-azure-"
    plaintext = (marker + os.urandom(32)) * (size // (len(marker) + 32) + 1)
    plaintext = plaintext[:size]
    name = f"reports/{blob_name('.bin')}"
    container = fresh_container.container_name

    response = _upload(azure_proxy, container, name, plaintext)
    assert response.status_code == 200, f"{response.status_code} {response.text}\n{azure_proxy.log_text()}"
    body = response.json()
    assert body["filename"] == name
    wrapped = body["decryption_keys"]["me"]

    blob = fresh_container.get_blob_client(name)
    properties = blob.get_blob_properties()
    assert properties.blob_type == BlobType.BLOCKBLOB, properties.blob_type
    stored = blob.download_blob().readall()
    assert properties.size == len(stored)
    assert len(stored) > len(plaintext)  # framing and authentication tags, never less
    assert stored != plaintext
    assert plaintext not in stored
    assert marker not in stored
    if request.node.callspec.params["azure_proxy"] == "fernet":
        assert stored.startswith(b"gAAAAA"), stored[:16]
        assert Fernet(azure_proxy.unwrap(wrapped)).decrypt(stored) == plaintext
    else:
        assert not stored.startswith(b"gAAAAA"), stored[:16]

    # Nothing but the blob itself is left: no staging blob, no uncommitted blocks.
    names = _settled_names(fresh_container, [name])
    assert names == [name], f"expected only {name!r} in the container, found {names}"
    assert list(fresh_container.list_blobs(name_starts_with=STAGING_PREFIX)) == []
    committed, uncommitted = blob.get_block_list("all")
    assert uncommitted == [], f"uncommitted blocks left on {name}: {uncommitted}"

    # And it reads back through blobprox.
    download = _download(azure_proxy, container, name, wrapped, by="header")
    assert download.status_code == 200, f"{download.status_code} {download.text[:500]}"
    assert download.content == plaintext


def _standard_alphabet_key() -> bytes:
    """A Fernet key text in the STANDARD base64 alphabet ('+' or '/'), as the original's keygen wrote."""
    while True:
        text = base64.b64encode(os.urandom(32))
        if b"+" in text or b"/" in text:
            return text


@pytest.mark.parametrize("alphabet", ["urlsafe", "standard"])
def test_python_proxy_blob_written_with_the_sdk_downloads(azure_proxy, azure_container, blob_name, alphabet):
    """The Python proxy's write path: Fernet(key).encrypt(data), then BlobClient.upload_blob."""
    plaintext = "Befund vom Python-Proxy\nzweite Zeile: äöü ✓\n".encode() * 40
    name = f"legacy/{blob_name('.txt')}"
    key_text = Fernet.generate_key() if alphabet == "urlsafe" else _standard_alphabet_key()
    token = Fernet(key_text).encrypt(plaintext)
    azure_container.get_blob_client(name).upload_blob(token)
    wrapped = azure_proxy.wrap(key_text)  # base64(RSA-OAEP-SHA256(key text)) for the proxy's public key

    for by in ("field", "header"):
        response = _download(azure_proxy, azure_container.container_name, name, wrapped, by=by)
        assert response.status_code == 200, f"{by}: {response.status_code} {response.text[:500]}"
        assert response.content == plaintext, by
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8", by


def test_missing_container_and_missing_blob_are_404(azure_stream_proxy, azure_service, azure_container, blob_name):
    proxy = azure_stream_proxy
    missing_container = _unique_container("blobprox-missing")
    assert not azure_service.get_container_client(missing_container).exists()

    upload = _upload(proxy, missing_container, blob_name(".txt"), b"goes nowhere\n")
    assert upload.status_code == 404, f"{upload.status_code} {upload.text}"
    assert _detail(upload) == "Container not found"
    assert not azure_service.get_container_client(missing_container).exists()

    wrapped = proxy.wrap(Fernet.generate_key())
    for container in (azure_container.container_name, missing_container):
        for by in ("field", "header"):
            download = _download(proxy, container, blob_name(".txt"), wrapped, by=by)
            assert download.status_code == 404, f"{container} {by}: {download.status_code} {download.text}"
            assert _detail(download) == "Blob not found", (container, by)


def test_refused_storage_credentials_are_reported(azure_wrong_key_proxy, azure_container, blob_name):
    proxy = azure_wrong_key_proxy

    ready = requests.get(f"{proxy.url}/readyz", timeout=HTTP_TIMEOUT)
    assert ready.status_code == 503, f"{ready.status_code} {ready.text}"
    detail = _detail(ready)
    assert isinstance(detail, str) and detail.startswith(CREDENTIALS_REFUSED), detail

    name = blob_name(".txt")
    upload = _upload(proxy, azure_container.container_name, name, b"never stored\n")
    assert upload.status_code == 502, f"{upload.status_code} {upload.text}"
    detail = _detail(upload)
    assert isinstance(detail, str) and detail.startswith(CREDENTIALS_REFUSED), detail
    assert not azure_container.get_blob_client(name).exists()

    # Reading is refused the same way, whether or not the blob exists.
    azure_container.get_blob_client(name).upload_blob(Fernet(Fernet.generate_key()).encrypt(b"x"))
    wrapped = proxy.wrap(Fernet.generate_key())
    for blob in (name, blob_name(".txt")):
        download = _download(proxy, azure_container.container_name, blob, wrapped, by="header")
        assert download.status_code == 502, f"{blob}: {download.status_code} {download.text}"
        detail = _detail(download)
        assert isinstance(detail, str) and detail.startswith(CREDENTIALS_REFUSED), detail

    # Health is about the process, not the storage: still 200.
    assert requests.get(f"{proxy.url}/healthz", timeout=HTTP_TIMEOUT).status_code == 200


def test_refused_and_racing_uploads_leave_no_staging_blobs(azure_stream_proxy, fresh_container, blob_name):
    """409s (the name taken before, or by a concurrent upload) keep the first blob and clean up."""
    proxy = azure_stream_proxy
    container = fresh_container.container_name
    name = blob_name(".txt")
    first = _upload(proxy, container, name, b"first\n")
    assert first.status_code == 200, first.text
    stored = fresh_container.get_blob_client(name).download_blob().readall()

    second = _upload(proxy, container, name, b"second\n")
    assert second.status_code == 409, f"{second.status_code} {second.text}"
    assert _detail(second) == "Blob already exists"
    assert fresh_container.get_blob_client(name).download_blob().readall() == stored

    raced = blob_name(".txt")
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda i=i: statuses.append(_upload(proxy, container, raced, b"racer %d\n" % i).status_code))
        for i in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=HTTP_TIMEOUT)
    assert sorted(statuses) == [200, 409, 409, 409, 409], statuses

    replaced = _upload(proxy, container, name, b"third\n", overwrite=True)
    assert replaced.status_code == 200, replaced.text
    download = _download(proxy, container, name, replaced.json()["decryption_keys"]["me"])
    assert download.status_code == 200 and download.content == b"third\n", download.text

    names = _settled_names(fresh_container, [name, raced])
    assert names == sorted([name, raced]), f"leftovers in the container: {names}"


def test_aborted_upload_leaves_nothing_visible(azure_stream_proxy, fresh_container, blob_name):
    """A client that goes away mid-upload (past the first 8 MiB block) leaves no blob behind."""
    proxy = azure_stream_proxy
    container = fresh_container.container_name
    name = blob_name(".bin")
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"public-keys\"\r\n\r\n"
        f"{json.dumps({'me': proxy.public_key_pem()})}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    promised = 64 * 1024 * 1024
    request_head = (
        f"POST /upload/{container}/{name} HTTP/1.1\r\nHost: {urlsplit(proxy.url).netloc}\r\n"
        + "".join(f"{key}: {value}\r\n" for key, value in proxy.headers.items())
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + promised}\r\n\r\n"
    ).encode()
    host, port = urlsplit(proxy.url).hostname, urlsplit(proxy.url).port
    with socket.create_connection((host, port), timeout=HTTP_TIMEOUT) as sock:
        sock.sendall(request_head + head)
        chunk = os.urandom(1024 * 1024)
        for _ in range(20):  # 20 MiB of the promised 64: two full blocks reach the storage
            sock.sendall(chunk)
        time.sleep(1.0)  # let the proxy pass those blocks on before the client vanishes
    names = _settled_names(fresh_container, [])
    assert names == [], f"an aborted upload left blobs behind: {names}"
    assert not fresh_container.get_blob_client(name).exists()
