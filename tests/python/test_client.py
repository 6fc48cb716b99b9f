"""The Python client (clients/python, package `blobprox_client`) against the real binary: round
trips of paths, bytes and file objects, Range reads through `open`, every error class, retries on
429/503, and progress output."""

from __future__ import annotations

import io
import os
import threading

import pytest
import requests

from blobprox_client import (
    AlreadyExistsError,
    AuthenticationError,
    BlobproxError,
    Client,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    WrongKeyError,
)

from client_helpers import client_for, credentials_file, metric, wait_until
from interop import CONTAINER, HTTP_TIMEOUT, start_blobprox_made_proxy

DATA = os.urandom(300_000) + "ünïcödé\n".encode()  # several stream segments, not segment-aligned


@pytest.fixture(params=["proxy", "stream_proxy"], ids=["fernet", "stream"])
def any_proxy(request):
    """Each blob format once: BLOB_FORMAT=fernet and BLOB_FORMAT=stream."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def client(stream_proxy):
    with client_for(stream_proxy) as client:
        yield client


def _me(proxy) -> dict[str, str]:
    return {"me": proxy.public_key_pem()}


class _Pipe(io.RawIOBase):
    """A file object that cannot seek and has no known size (like a pipe or a socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._data.readinto(buffer)


SOURCES = {
    "bytes": lambda tmp_path: DATA,
    "path": lambda tmp_path: _write(tmp_path / "in.bin", DATA),
    "path-str": lambda tmp_path: str(_write(tmp_path / "in.bin", DATA)),
    "file": lambda tmp_path: open(_write(tmp_path / "in.bin", DATA), "rb"),
    "unseekable": lambda tmp_path: _Pipe(DATA),
}


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("source", list(SOURCES))
def test_round_trip(any_proxy, tmp_path, blob_name, source):
    name = f"client/{blob_name('.bin')}"
    data = SOURCES[source](tmp_path)
    with client_for(any_proxy) as client:
        keys = client.upload(CONTAINER, name, data, _me(any_proxy))
        if isinstance(data, io.IOBase):
            data.close()
        assert set(keys) == {"me"}
        # What the proxy's private key opens: a wrapped Fernet key text, as the Python proxy expects.
        assert len(any_proxy.unwrap(keys["me"])) == 44

        assert client.download(CONTAINER, name, keys["me"]) == DATA
        dest = tmp_path / "out.bin"
        assert client.download(CONTAINER, name, keys["me"], dest=dest) is None
        assert dest.read_bytes() == DATA
        assert {p.name for p in tmp_path.iterdir()} <= {"in.bin", "out.bin"}, "a temporary file is left"


def test_file_object_is_read_from_its_position(client, stream_proxy, tmp_path, blob_name):
    name = blob_name(".bin")
    with open(_write(tmp_path / "in.bin", b"HEADER" + DATA), "rb") as f:
        f.read(6)
        key = client.upload(CONTAINER, name, f, _me(stream_proxy))["me"]
    assert client.download(CONTAINER, name, key) == DATA


def test_unicode_and_awkward_names(client, stream_proxy, blob_name):
    name = f"dir one/ünï cödé %20 ?#&+/{blob_name('.csv')}"
    key = client.upload(CONTAINER, name, b"a,b\n1,2\n", _me(stream_proxy))["me"]
    assert client.download(CONTAINER, name, key) == b"a,b\n1,2\n"
    assert stream_proxy.blob_path(name).is_file()


def test_from_credentials_file(stream_proxy, tmp_path, blob_name):
    path = credentials_file(stream_proxy, tmp_path)
    with Client.from_credentials_file(path, stream_proxy.url) as client:
        assert client.public_key() == stream_proxy.public_key_pem()
        key = client.upload(CONTAINER, blob_name(), b"hello", _me(stream_proxy))["me"]
        assert stream_proxy.unwrap(key)


def test_open_reads_ranges(client, stream_proxy, blob_name):
    name = blob_name(".bin")
    key = client.upload(CONTAINER, name, DATA, _me(stream_proxy))["me"]
    partial = metric(stream_proxy, "blobprox_requests_total", status="206")
    with client.open(CONTAINER, name, key, block_size=4096) as f:
        assert f.seekable()
        assert f.seek(0, os.SEEK_END) == len(DATA)
        f.seek(123_456)
        assert f.read(10) == DATA[123_456:123_466]
        assert f.read(5) == DATA[123_466:123_471]  # from the buffer
        f.seek(-7, os.SEEK_END)
        assert f.read() == DATA[-7:]
        assert f.read(1) == b""
    assert metric(stream_proxy, "blobprox_requests_total", status="206") - partial == 2


def test_open_reads_a_fernet_blob_without_ranges(proxy, blob_name):
    with client_for(proxy) as client:
        name = blob_name(".bin")
        key = client.upload(CONTAINER, name, DATA, _me(proxy))["me"]
        with client.open(CONTAINER, name, key) as f:
            f.seek(200_000)
            assert f.read(1000) == DATA[200_000:201_000]


# --- errors -----------------------------------------------------------------------------------


def test_authentication_error(stream_proxy, tmp_path):
    values = dict(stream_proxy.client, key="not-the-comparison-key")
    with Client(stream_proxy.url, values["decryption_key"], values["salt"], values["key"]) as client:
        with pytest.raises(AuthenticationError) as caught:
            client.public_key()
        assert caught.value.status == 401
        assert caught.value.detail == "Authentication failed"
        assert isinstance(caught.value, BlobproxError)

        # The proxy answers an upload before it reads the body: the client reports that answer
        # (not a broken pipe) while most of the file is still unsent.
        big = tmp_path / "big.bin"
        with open(big, "wb") as f:
            f.truncate(256 * 2**20)
        with pytest.raises(AuthenticationError):
            client.upload(CONTAINER, "refused.bin", big, _me(stream_proxy))


def test_not_found_error(client, stream_proxy, blob_name):
    key = client.upload(CONTAINER, blob_name(), b"x", _me(stream_proxy))["me"]
    with pytest.raises(NotFoundError) as caught:
        client.download(CONTAINER, blob_name(), key)
    assert (caught.value.status, caught.value.detail) == (404, "Blob not found")
    with pytest.raises(NotFoundError):
        client.upload("no-such-container", blob_name(), b"x", _me(stream_proxy))


def test_already_exists_error_and_overwrite(client, stream_proxy, blob_name):
    name = blob_name()
    client.upload(CONTAINER, name, b"first", _me(stream_proxy))
    with pytest.raises(AlreadyExistsError) as caught:
        client.upload(CONTAINER, name, b"second", _me(stream_proxy))
    assert (caught.value.status, caught.value.detail) == (409, "Blob already exists")
    key = client.upload(CONTAINER, name, b"third", _me(stream_proxy), overwrite=True)["me"]
    assert client.download(CONTAINER, name, key) == b"third"


def test_wrong_key_errors(client, stream_proxy, blob_name):
    name, other = blob_name(), blob_name()
    client.upload(CONTAINER, name, b"mine", _me(stream_proxy))
    other_key = client.upload(CONTAINER, other, b"other", _me(stream_proxy))["me"]
    with pytest.raises(WrongKeyError) as caught:
        client.download(CONTAINER, name, other_key)  # a good key, for another blob
    assert caught.value.status == 403
    with pytest.raises(WrongKeyError) as caught:
        client.download(CONTAINER, name, "bm90IGEga2V5")  # not wrapped for this proxy
    assert caught.value.status == 400 and "unwrap" in caught.value.detail
    with pytest.raises(WrongKeyError):
        client.open(CONTAINER, name, other_key)


def test_invalid_request_error(client, stream_proxy):
    with pytest.raises(InvalidRequestError) as caught:
        client.upload("Not_A_Container", "x.txt", b"x", _me(stream_proxy))
    assert caught.value.status == 400
    with pytest.raises(InvalidRequestError) as caught:
        client.upload(CONTAINER, "x.txt", b"x", {})  # no recipients
    assert caught.value.status == 400


def test_integrity_error_before_the_first_byte(client, stream_proxy, blob_name, tmp_path):
    name = blob_name(".bin")
    key = client.upload(CONTAINER, name, DATA, _me(stream_proxy))["me"]
    stored = bytearray(stream_proxy.blob_path(name).read_bytes())
    stored[85] ^= 0xFF  # the header's checksum: a damaged header
    stream_proxy.blob_path(name).write_bytes(stored)
    with pytest.raises(IntegrityError) as caught:
        client.download(CONTAINER, name, key)
    assert caught.value.status == 502


def test_integrity_error_in_the_middle_of_the_body(client, stream_proxy, blob_name, tmp_path):
    name = blob_name(".bin")
    key = client.upload(CONTAINER, name, DATA, _me(stream_proxy))["me"]
    stored = bytearray(stream_proxy.blob_path(name).read_bytes())
    # A middle segment (the proxy checks the header and the last segment before it answers, the
    # others as they go out).
    stored[len(stored) // 2] ^= 0x01
    stream_proxy.blob_path(name).write_bytes(stored)
    with pytest.raises(IntegrityError) as caught:
        client.download(CONTAINER, name, key)
    assert caught.value.status is None and "stopped after" in caught.value.detail
    dest = tmp_path / "out.bin"
    with pytest.raises(IntegrityError):
        client.download(CONTAINER, name, key, dest=dest)
    assert list(tmp_path.iterdir()) == [], "a failed download left a file behind"


def test_unavailable_error_without_a_proxy():
    with Client("http://127.0.0.1:9", "k", "s", "c", timeout=5) as client:
        with pytest.raises(UnavailableError) as caught:
            client.public_key()
    assert caught.value.status is None


# --- retries ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def busy_proxy(launcher, tmp_path_factory):
    """A proxy that runs one transfer at a time: a second one is answered 503 with Retry-After: 1."""
    return start_blobprox_made_proxy(
        launcher, tmp_path_factory, "blobprox-one-transfer", extra_env={"MAX_CONCURRENT_TRANSFERS": "1"}
    )


class _HeldTransfer:
    """An upload that takes the proxy's only transfer slot and holds it until `release()`."""

    def __init__(self, proxy) -> None:
        self._proxy = proxy
        self._release = threading.Event()
        self._thread: threading.Thread | None = None
        wait_until(self._holding, "an upload to take the transfer slot")

    def _send(self) -> None:
        boundary = "held"

        def body():
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'.encode()
            self._release.wait(HTTP_TIMEOUT)
            yield f"\r\n--{boundary}--\r\n".encode()

        requests.post(
            f"{self._proxy.url}/upload/{CONTAINER}/held.bin",
            headers={**self._proxy.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            data=body(),
            timeout=HTTP_TIMEOUT,
        )

    def _holding(self) -> bool:
        """Whether the slot is taken (a probe is refused 503); (re)starts the held upload until it
        is, since one that came while the slot was still taken has been refused and has ended."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._send, daemon=True)
            self._thread.start()
        probe = f"{self._proxy.url}/download/{CONTAINER}/probe"
        return requests.head(probe, headers=self._proxy.headers, timeout=HTTP_TIMEOUT).status_code == 503

    def release(self) -> None:
        self._release.set()
        if self._thread is not None:
            self._thread.join(HTTP_TIMEOUT)


def test_busy_proxy_is_retried_until_it_answers(busy_proxy, blob_name):
    held = _HeldTransfer(busy_proxy)

    def refused() -> float:
        return metric(busy_proxy, "blobprox_requests_total", route="/upload/{container}/{*blob}", status="503")

    refused_before = refused()
    outcome: dict[str, object] = {}

    def upload():
        with client_for(busy_proxy, retries=100, max_retry_wait=0.2) as client:
            outcome["keys"] = client.upload(CONTAINER, blob_name(), b"waited", _me(busy_proxy))

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        wait_until(lambda: refused() > refused_before, "the client to be refused once")
    finally:
        held.release()
    thread.join(HTTP_TIMEOUT)
    assert set(outcome["keys"]) == {"me"}


def test_busy_proxy_retries_are_bounded(busy_proxy, blob_name):
    held = _HeldTransfer(busy_proxy)
    route = "/download/{container}/{*blob}"
    try:
        before = metric(busy_proxy, "blobprox_requests_total", route=route, status="503")
        with client_for(busy_proxy, retries=2, max_retry_wait=0) as client:
            with pytest.raises(UnavailableError) as caught:
                client.download(CONTAINER, blob_name(), "a-key")
        after = metric(busy_proxy, "blobprox_requests_total", route=route, status="503")
    finally:
        held.release()
    assert caught.value.status == 503 and "too many transfers" in caught.value.detail
    assert after - before == 3  # the first attempt and two retries


def test_throttled_client_is_retried_a_bounded_number_of_times(launcher, tmp_path_factory):
    """After a flood of wrong credentials the proxy answers 429 with Retry-After, even to good ones."""
    proxy = start_blobprox_made_proxy(
        launcher, tmp_path_factory, "blobprox-throttling", extra_env={"AUTH_FAILURES_PER_MINUTE": "2"}
    )
    wrong = {**proxy.headers, "x-comparison-key": "wrong"}
    wait_until(
        lambda: requests.get(f"{proxy.url}/key/public", headers=wrong, timeout=HTTP_TIMEOUT).status_code == 429,
        "the proxy to throttle this address",
    )
    before = metric(proxy, "blobprox_requests_total", status="429")
    with client_for(proxy, retries=2, max_retry_wait=0.1) as client:
        with pytest.raises(UnavailableError) as caught:
            client.public_key()
    assert caught.value.status == 429
    assert metric(proxy, "blobprox_requests_total", status="429") - before == 3


# --- progress ---------------------------------------------------------------------------------


def test_progress_bars(client, stream_proxy, blob_name, capfd):
    name = blob_name(".bin")
    key = client.upload(CONTAINER, name, DATA, _me(stream_proxy))["me"]
    assert capfd.readouterr().err == "", "progress is off by default"

    client.upload(CONTAINER, name, DATA, _me(stream_proxy), overwrite=True, progress=True)
    err = capfd.readouterr().err
    assert f"upload {name}" in err and "100%|" in err  # a tqdm bar, at its end

    key = client.upload(CONTAINER, name, DATA, _me(stream_proxy), overwrite=True)["me"]
    capfd.readouterr()
    assert client.download(CONTAINER, name, key, progress=True) == DATA
    err = capfd.readouterr().err
    assert f"download {name}" in err and "100%|" in err


def test_progress_lines_without_tqdm(client, stream_proxy, blob_name, capfd, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)  # `import` now fails
    name, mib = blob_name(".bin"), 2**20
    client.upload(CONTAINER, name, bytes(4 * mib), _me(stream_proxy), progress=True)  # 4 chunks
    assert capfd.readouterr().err.splitlines() == [f"upload {name}: {n * mib} bytes ({n * 25}%)" for n in (1, 2, 3, 4)]
