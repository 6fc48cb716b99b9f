"""Range readers: pyarrow reads one Parquet column through blobprox over fsspec's HTTP filesystem.

The blob is written in the streaming format (BLOB_FORMAT=stream), which serves `Range` requests
(see "Range reads" in API.md). fsspec finds the size with a HEAD (credentials and `x-blob-key` in
the headers) and then asks for byte ranges; pyarrow only asks for the footer and the column chunks
it needs. Between fsspec and blobprox sits a small forwarding proxy that reads every upstream
response to its end and counts the bytes, so the numbers below are what blobprox really sent:
a blobprox that ignored `Range` and answered 200 with the whole body would be caught both by the
status check and by the byte count (the last test shows that it would).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import requests

from interop import CONTAINER, HTTP_TIMEOUT

N_ROWS = 200_000
N_COLUMNS = 10
ROW_GROUP_ROWS = 50_000  # 4 row groups: one column chunk is ~1/40 of the file
BLOCK_SIZE = 64 * 1024
COLUMN = "c03"  # a float64 column in the middle of the file

# How much of the file one read may move, at most. Reading 1 column of 10 needs ~10 % (footer
# included); one column chunk of one row group needs ~2.5 %.
MAX_FRACTION_COLUMN = 0.25
MAX_FRACTION_ROW_GROUP = 0.05


def make_table() -> pa.Table:
    """Random int64 and float64 columns (incompressible, so the file is ~16 MB)."""
    columns = {}
    for i in range(N_COLUMNS):
        if i % 2 == 0:
            buffer = pa.py_buffer(os.urandom(8 * N_ROWS))
            columns[f"c{i:02d}"] = pa.Array.from_buffers(pa.int64(), N_ROWS, [None, buffer])
        else:
            columns[f"c{i:02d}"] = pc.random(N_ROWS)
    return pa.table(columns)


@dataclass
class ParquetBlob:
    name: str
    data: bytes
    table: pa.Table
    wrapped: str


@pytest.fixture(scope="module")
def parquet_blob(stream_proxy) -> ParquetBlob:
    table = make_table()
    sink = pa.BufferOutputStream()
    pq.write_table(
        table, sink, row_group_size=ROW_GROUP_ROWS, compression="none", use_dictionary=False
    )
    data = sink.getvalue().to_pybytes()
    assert 10 * 2**20 <= len(data) <= 20 * 2**20, len(data)
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == N_ROWS // ROW_GROUP_ROWS

    name = f"ranges/table-{uuid.uuid4().hex[:8]}.parquet"
    response = requests.post(
        f"{stream_proxy.url}/upload/{CONTAINER}/{name}",
        headers=stream_proxy.headers,
        files={
            "file": ("table.parquet", data, "application/octet-stream"),
            "public-keys": (None, json.dumps({"me": stream_proxy.public_key_pem()})),
        },
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    wrapped = response.json()["decryption_keys"]["me"]

    # The fixture really made a streaming-format blob, and it is encrypted.
    stored = stream_proxy.blob_path(name).read_bytes()
    assert not stored.startswith(b"gAAAAA"), "BLOB_FORMAT=stream wrote a Fernet token"
    assert data[-4096:] not in stored and data[1 << 20 : (1 << 20) + 4096] not in stored
    return ParquetBlob(name=name, data=data, table=table, wrapped=wrapped)


# --- a counting forwarding proxy --------------------------------------------------------------

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


@dataclass
class Exchange:
    method: str
    range: str | None
    status: int
    content_range: str | None
    content_length: str | None
    body_bytes: int  # bytes of body blobprox sent (read to the end, whatever the client wanted)


class CountingForwarder:
    """Forwards GET/HEAD to `upstream` and records, per request, what blobprox answered.

    With `drop_range=True` it removes the `Range` header, to show what the checks make of a
    server that ignores ranges.
    """

    def __init__(self, upstream: str, drop_range: bool = False):
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.drop_range = drop_range
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        forwarder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as aiohttp expects

            def do_GET(self):
                self._forward()

            def do_HEAD(self):
                self._forward()

            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in _HOP_BY_HOP
                    and not (forwarder.drop_range and k.lower() == "range")
                }
                conn = http.client.HTTPConnection(
                    forwarder.upstream_host, forwarder.upstream_port, timeout=HTTP_TIMEOUT
                )
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    upstream = conn.getresponse()
                    payload = upstream.read()  # to the end: count everything blobprox sends
                    upstream_headers = upstream.getheaders()
                    status = upstream.status
                finally:
                    conn.close()
                with forwarder._lock:
                    forwarder.exchanges.append(
                        Exchange(
                            method=self.command,
                            range=headers.get("Range"),
                            status=status,
                            content_range=upstream.getheader("Content-Range"),
                            content_length=upstream.getheader("Content-Length"),
                            body_bytes=len(payload),
                        )
                    )
                try:
                    self.send_response_only(status)
                    for key, value in upstream_headers:
                        lower = key.lower()
                        if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                            continue
                        self.send_header(key, value)
                    if self.command != "HEAD":
                        self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up on this answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def take(self) -> list[Exchange]:
        with self._lock:
            taken, self.exchanges = self.exchanges, []
        return taken

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@pytest.fixture
def forwarder(stream_proxy):
    forwarder = CountingForwarder(stream_proxy.url)
    yield forwarder
    forwarder.close()


# --- helpers ----------------------------------------------------------------------------------


def open_over_http(base_url: str, proxy_headers: dict[str, str], blob: ParquetBlob):
    """The blob as an fsspec HTTP file: small blocks, no read-ahead, key in `x-blob-key`."""
    fs = fsspec.filesystem(
        "http",
        headers={**proxy_headers, "x-blob-key": blob.wrapped},  # on the HEAD and on every GET
        block_size=BLOCK_SIZE,
        cache_type="none",
        skip_instance_cache=True,
    )
    return fs.open(
        f"{base_url}/download/{CONTAINER}/{blob.name}", "rb", block_size=BLOCK_SIZE, cache_type="none"
    )


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def assert_ranged_reads(exchanges: list[Exchange], size: int, max_fraction: float) -> int:
    """Every GET was a single range answered 206 with exactly those bytes, and in all they moved
    less than `max_fraction` of the file. Returns the body bytes that blobprox sent."""
    assert exchanges, "the read made no request to the proxy"
    heads = [e for e in exchanges if e.method == "HEAD"]
    gets = [e for e in exchanges if e.method == "GET"]
    assert len(heads) + len(gets) == len(exchanges), exchanges
    # fsspec finds the size with HEAD; had that failed, it would have fallen back to a whole GET.
    assert heads, f"no HEAD for the size: {exchanges}"
    for head in heads:
        assert head.status == 200 and head.content_length == str(size), head
        assert head.body_bytes == 0, head
    assert gets, f"no GET: {exchanges}"
    for get in gets:
        assert get.range is not None, f"a GET without Range: {get}"
        assert get.status == 206, f"not a range answer: {get}"
        first, last = map(int, _RANGE.fullmatch(get.range).groups())
        want_last = min(last, size - 1)
        assert get.content_range == f"bytes {first}-{want_last}/{size}", get
        assert get.body_bytes == want_last - first + 1, get
    moved = sum(e.body_bytes for e in exchanges)
    assert moved < max_fraction * size, (
        f"moved {moved} bytes of a {size}-byte file ({moved / size:.1%}), "
        f"more than {max_fraction:.0%}: {exchanges}"
    )
    return moved


def column_chunk_bytes(data: bytes, column: str, row_groups) -> int:
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    index = metadata.schema.names.index(column)
    return sum(metadata.row_group(i).column(index).total_compressed_size for i in row_groups)


# --- tests ------------------------------------------------------------------------------------


def test_pyarrow_reads_one_column_through_ranges(stream_proxy, parquet_blob, forwarder):
    size = len(parquet_blob.data)
    with open_over_http(forwarder.url, stream_proxy.headers, parquet_blob) as f:
        got = pq.ParquetFile(f).read(columns=[COLUMN])
    exchanges = forwarder.take()

    assert got.column_names == [COLUMN]
    assert got.column(COLUMN).equals(parquet_blob.table.column(COLUMN))

    moved = assert_ranged_reads(exchanges, size, MAX_FRACTION_COLUMN)
    needed = column_chunk_bytes(parquet_blob.data, COLUMN, range(N_ROWS // ROW_GROUP_ROWS))
    assert moved >= needed
    print(
        f"\nread column {COLUMN}: {moved} bytes moved of {size} ({moved / size:.2%}); "
        f"column chunks {needed} bytes; {len(exchanges)} requests "
        f"({sum(e.method == 'GET' for e in exchanges)} range GETs)"
    )


def test_pyarrow_reads_one_column_chunk_of_one_row_group(stream_proxy, parquet_blob, forwarder):
    size = len(parquet_blob.data)
    row_group, column = 2, "c06"  # an int64 column
    with open_over_http(forwarder.url, stream_proxy.headers, parquet_blob) as f:
        got = pq.ParquetFile(f).read_row_group(row_group, columns=[column])
    exchanges = forwarder.take()

    start = row_group * ROW_GROUP_ROWS
    assert got.column(column).equals(parquet_blob.table.column(column).slice(start, ROW_GROUP_ROWS))

    moved = assert_ranged_reads(exchanges, size, MAX_FRACTION_ROW_GROUP)
    needed = column_chunk_bytes(parquet_blob.data, column, [row_group])
    assert moved >= needed
    print(
        f"\nread row group {row_group} of {column}: {moved} bytes moved of {size} "
        f"({moved / size:.2%}); column chunk {needed} bytes; {len(exchanges)} requests"
    )


def test_suffix_range_with_requests(stream_proxy, parquet_blob):
    size = len(parquet_blob.data)
    url = f"{stream_proxy.url}/download/{CONTAINER}/{parquet_blob.name}"
    headers = {**stream_proxy.headers, "x-blob-key": parquet_blob.wrapped}

    response = requests.get(url, headers={**headers, "Range": "bytes=-1024"}, timeout=HTTP_TIMEOUT)
    assert response.status_code == 206, response.text
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    assert match, response.headers
    first, last, total = map(int, match.groups())
    assert (first, last, total) == (size - 1024, size - 1, size)
    assert response.headers["Content-Length"] == "1024"
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.content == parquet_blob.data[-1024:]

    # The same answer through the `decryption-key` form field (the original's way of sending it).
    response = requests.get(
        url,
        headers={**stream_proxy.headers, "Range": "bytes=-1024"},
        data={"decryption-key": parquet_blob.wrapped},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 206, response.text
    assert response.headers["Content-Range"] == f"bytes {size - 1024}-{size - 1}/{size}"
    assert response.content == parquet_blob.data[-1024:]

    head = requests.head(url, headers=headers, timeout=HTTP_TIMEOUT)
    assert head.status_code == 200, head.headers
    assert head.headers["Content-Length"] == str(size)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.content == b""


def test_the_checks_catch_a_server_that_ignores_ranges(stream_proxy, parquet_blob):
    """Against answers that ignore `Range` (here: the forwarder drops the header, so blobprox sends
    200 and the whole body), the read fails or the checks above fail: the tests cannot pass by
    accident."""
    size = len(parquet_blob.data)
    ignoring = CountingForwarder(stream_proxy.url, drop_range=True)
    try:
        try:
            with open_over_http(ignoring.url, stream_proxy.headers, parquet_blob) as f:
                got = pq.ParquetFile(f).read(columns=[COLUMN])
            assert got.column(COLUMN).equals(parquet_blob.table.column(COLUMN))
        except (ValueError, OSError):
            pass  # fsspec refuses a 200 whole body for a read that does not start at 0
        exchanges = ignoring.take()
    finally:
        ignoring.close()
    assert any(e.method == "GET" and e.status == 200 and e.body_bytes == size for e in exchanges)
    with pytest.raises(AssertionError):
        assert_ranged_reads(exchanges, size, MAX_FRACTION_COLUMN)
