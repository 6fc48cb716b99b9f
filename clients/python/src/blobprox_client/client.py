"""`Client`: the blobprox HTTP API as Python calls, with streaming transfers and bounded retries."""

from __future__ import annotations

import contextlib
import email.utils
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Union, overload
from urllib.parse import quote

import requests
import urllib3

from .errors import IntegrityError, UnavailableError, error_from_response
from .multipart import CHUNK_SIZE, MultipartBody, SizedBody, file_size
from .progress import make_progress
from .rangefile import RangeReader

#: What `upload` accepts as content: a path, bytes, or a binary file object (read from its position).
Data = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]

#: Statuses the proxy answers with `Retry-After` when trying again later may succeed.
RETRY_STATUSES = (429, 503)

#: Bytes of plaintext one Range request of `open()` asks for, at least.
DEFAULT_BLOCK_SIZE = 256 * 1024

# Errors of a response body that ends before its Content-Length (or its last chunk).
_CUT_OFF = (
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    urllib3.exceptions.ProtocolError,
)


class Client:
    """A connection to one blobprox proxy with one set of credentials.

    `retries` bounds how many times a request answered 429 or 503 is sent again, each time after the
    answer's `Retry-After` (at most `max_retry_wait` seconds); `timeout` is the seconds to wait for
    the proxy to connect or to send something.
    """

    def __init__(
        self,
        url: str,
        decryption_key: str,
        salt: str,
        comparison_key: str,
        *,
        retries: int = 3,
        max_retry_wait: float = 30.0,
        timeout: float = 60.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries, self.max_retry_wait, self.timeout = retries, max_retry_wait, timeout
        self._headers = {"x-decryption-key": decryption_key, "x-salt": salt, "x-comparison-key": comparison_key}
        self._session = session or requests.Session()

    @classmethod
    def from_credentials_file(cls, path: str | os.PathLike[str], url: str, **options: Any) -> Client:
        """A client with the credentials of a `<ts>_blobprox.json` that `blobprox credentials` wrote."""
        values = json.loads(Path(path).read_text())
        return cls(url, values["decryption_key"], values["salt"], values["key"], **options)

    def close(self) -> None:
        """Closes the connections this client keeps open."""
        self._session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def public_key(self) -> str:
        """The proxy's RSA public key (PEM): what other proxies' users name it with as a recipient."""
        with self._request("GET", "/key/public") as response:
            return str(response.json()["public_key"])

    def upload(
        self,
        container: str,
        name: str,
        data: Data,
        recipients: Mapping[str, str],
        overwrite: bool = False,
        *,
        progress: bool = False,
    ) -> dict[str, str]:
        """Encrypts and stores `data` as blob `name`; returns `{recipient: wrapped key}`.

        `recipients` maps an id of your choice to a proxy's public key PEM (see `public_key`). The
        content is streamed in chunks; a file object is read from its current position, and can be
        sent again on a retry only if it is seekable.
        """
        opener, size, replayable = _opener(data)
        fields = [("public-keys", json.dumps(dict(recipients))), ("overwrite", "true" if overwrite else "false")]
        bar = make_progress(progress, size, f"upload {name}")

        def send() -> dict[str, Any]:
            bar.reset()  # a retry sends the file again
            body = MultipartBody(fields, "file", name.rsplit("/", 1)[-1], opener, size, bar.update)
            length = body.length()
            return {
                "headers": {"Content-Type": body.content_type},
                "data": iter(body) if length is None else SizedBody(body, length),
            }

        try:
            with self._request("POST", "/upload", container, name, send=send, replayable=replayable) as response:
                return dict(response.json()["decryption_keys"])
        finally:
            bar.close()

    @overload
    def download(self, container: str, name: str, key: str, dest: None = None, *, progress: bool = False) -> bytes: ...

    @overload
    def download(
        self, container: str, name: str, key: str, dest: str | os.PathLike[str], *, progress: bool = False
    ) -> None: ...

    def download(
        self,
        container: str,
        name: str,
        key: str,
        dest: str | os.PathLike[str] | None = None,
        *,
        progress: bool = False,
    ) -> bytes | None:
        """The plaintext of blob `name`, opened with `key` (a wrapped key for this proxy).

        With `dest`, the plaintext is streamed into that file instead (through a temporary file
        beside it, renamed when the whole blob has arrived and checked, so that a failed download
        leaves no partial file) and None is returned.
        """
        send = _key_header(key)
        with self._request("GET", "/download", container, name, send=send, stream=True) as response:
            length = response.headers.get("Content-Length")
            bar = make_progress(progress, int(length) if length else None, f"download {name}")
            try:
                if dest is None:
                    return b"".join(_body_chunks(response, bar.update))
                _write_atomically(Path(dest), _body_chunks(response, bar.update))
                return None
            finally:
                bar.close()

    def open(self, container: str, name: str, key: str, *, block_size: int = DEFAULT_BLOCK_SIZE) -> io.BufferedReader:
        """Blob `name` as a seekable binary file that reads only the byte ranges asked for.

        Reads of up to `block_size` bytes share one Range request. Blobs in the legacy Fernet
        format have no ranges: each request then streams the blob from its start.
        """
        size = self._size(container, name, key)

        def fetch(first: int, last: int) -> bytes:
            return self._read_range(container, name, key, first, last)

        return io.BufferedReader(RangeReader(size, fetch, f"{container}/{name}"), buffer_size=block_size)

    def share(self, container: str, name: str, key: str, recipients: Mapping[str, str]) -> dict[str, str]:
        """Wraps the key of blob `name` (opened with `key`) for more recipients, without rewriting the
        blob; returns `{recipient: wrapped key}` for the recipients named."""

        def send() -> dict[str, Any]:
            return {
                "headers": {"x-blob-key": key},
                "files": {"public-keys": (None, json.dumps(dict(recipients)))},
            }

        with self._request("POST", "/share", container, name, send=send) as response:
            return dict(response.json()["decryption_keys"])

    def _size(self, container: str, name: str, key: str) -> int:
        with self._request("HEAD", "/download", container, name, send=_key_header(key)) as response:
            return int(response.headers["Content-Length"])

    def _read_range(self, container: str, name: str, key: str, first: int, last: int) -> bytes:
        def send() -> dict[str, Any]:
            return {"headers": {"x-blob-key": key, "Range": f"bytes={first}-{last}"}}

        with self._request("GET", "/download", container, name, send=send, stream=True) as response:
            chunks = _body_chunks(response, lambda n: None)
            if response.status_code == 206:
                return b"".join(chunks)
            # A whole body (a legacy Fernet blob): skip to `first`, keep up to `last`.
            kept, offset = [], 0
            for chunk in chunks:
                lo, hi = max(first - offset, 0), min(last + 1 - offset, len(chunk))
                if lo < hi:
                    kept.append(chunk[lo:hi])
                offset += len(chunk)
                if offset > last:
                    break
            return b"".join(kept)

    @contextlib.contextmanager
    def _request(
        self,
        method: str,
        route: str,
        container: str | None = None,
        name: str | None = None,
        *,
        send: Callable[[], dict[str, Any]] = dict,
        replayable: bool = True,
        stream: bool = False,
    ) -> Iterator[requests.Response]:
        """Sends a request (again after 429/503, within the bounds) and yields its successful answer.

        `send` makes the request's headers and body afresh for every attempt.
        """
        url = self.url + route
        if container is not None:
            url += "/" + quote(container, safe="")
        if name is not None:
            url += "/" + quote(name, safe="/")
        for attempt in range(self.retries + 1):
            extra = send()
            headers = {**self._headers, **extra.pop("headers", {})}
            try:
                response = self._session.request(
                    method, url, headers=headers, timeout=self.timeout, stream=stream, **extra
                )
            except requests.RequestException as error:
                raise UnavailableError(f"no answer from {self.url}: {error}") from error
            if response.status_code in RETRY_STATUSES and replayable and attempt < self.retries:
                wait = _retry_after(response, attempt, self.max_retry_wait)
                response.close()
                time.sleep(wait)
                continue
            if response.status_code >= 400:
                with response:
                    raise error_from_response(response)
            with response:
                yield response
            return


def _key_header(key: str) -> Callable[[], dict[str, Any]]:
    return lambda: {"headers": {"x-blob-key": key}}


def _opener(data: Data) -> tuple[Callable[[], contextlib.AbstractContextManager[BinaryIO]], int | None, bool]:
    """How to (re)open `data` for sending, its size if known, and whether it can be sent twice."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        content = bytes(data) if isinstance(data, memoryview) else data
        return (lambda: io.BytesIO(content)), len(content), True
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return (lambda: path.open("rb")), path.stat().st_size, True
    if not hasattr(data, "read"):
        raise TypeError(f"upload data must be a path, bytes or a binary file object, not {type(data).__name__}")
    file, size = data, file_size(data)
    start = file.tell() if size is not None else 0

    def reopen() -> contextlib.AbstractContextManager[BinaryIO]:
        if size is not None:
            file.seek(start)
        return contextlib.nullcontext(file)

    return reopen, size, size is not None


def _retry_after(response: requests.Response, attempt: int, limit: float) -> float:
    """Seconds to wait before the next attempt: `Retry-After` (seconds or a date), else 1, 2, 4 …"""
    value = response.headers.get("Retry-After", "").strip()
    wait = float(2**attempt)
    if value.isdigit():
        wait = float(value)
    elif value:
        with contextlib.suppress(TypeError, ValueError):
            wait = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    return min(max(wait, 0.0), limit)


def _body_chunks(response: requests.Response, on_chunk: Callable[[int], None]) -> Iterator[bytes]:
    """The body of a streamed answer, chunk by chunk; a body cut off short raises IntegrityError."""
    received = 0
    try:
        for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
            received += len(chunk)
            on_chunk(len(chunk))
            yield chunk
    except _CUT_OFF as error:
        raise IntegrityError(
            f"the download stopped after {received} bytes: the proxy cuts a blob off when it fails "
            f"authentication part way, or the connection broke ({error})"
        ) from error


def _write_atomically(dest: Path, chunks: Iterator[bytes]) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
        os.replace(temporary, dest)
    except BaseException:
        os.unlink(temporary)
        raise
