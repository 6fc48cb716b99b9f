"""`blobprox://` paths through fsspec: pandas and pyarrow read one Parquet column of a blob and
the proxy sends only a part of the file (counted by its own `blobprox_sent_bytes_total`)."""

from __future__ import annotations

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from blobprox_client.filesystem import BlobproxFileSystem

from client_helpers import client_for, credentials_file, metric
from interop import CONTAINER

ROWS, COLUMNS = 100_000, "abcdefgh"  # 8 float64 columns: one is ~1/8 of the file
# Reading column "a" moves its chunk (~12.5 %), the footer, and at most a block of read-ahead.
MAX_FRACTION = 0.25


@pytest.fixture(scope="module")
def parquet(stream_proxy, tmp_path_factory):
    """A Parquet blob in the streaming format, its bytes, table, wrapped key and storage options."""
    table = pa.table({c: pc.random(ROWS) for c in COLUMNS})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none", use_dictionary=False)
    data = sink.getvalue().to_pybytes()
    name = "tables/t.parquet"
    with client_for(stream_proxy) as client:
        key = client.upload(CONTAINER, name, data, {"me": stream_proxy.public_key_pem()}, overwrite=True)["me"]
    options = {
        "endpoint": stream_proxy.url,
        "credentials": str(credentials_file(stream_proxy, tmp_path_factory.mktemp("creds"))),
        "blob_key": key,
    }
    return {"name": name, "data": data, "table": table, "options": options}


class _SentBytes:
    """What the proxy sent (response bodies and headers) while the `with` block ran."""

    def __init__(self, proxy) -> None:
        self._proxy = proxy

    def __enter__(self) -> _SentBytes:
        self._before = self._count()
        return self

    def __exit__(self, *exc_info) -> None:
        self.sent = self._count() - self._before

    def _count(self) -> float:
        return metric(self._proxy, "blobprox_sent_bytes_total")


def _assert_moved_part(sent: float, data: bytes) -> None:
    chunk = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0).column(0).total_compressed_size
    assert chunk <= sent < MAX_FRACTION * len(data), f"{sent} bytes sent for a {len(data)}-byte file"
    print(f"\nread column a: {sent:.0f} of {len(data)} bytes ({sent / len(data):.1%}); column chunk {chunk}")


def test_pandas_reads_one_column(stream_proxy, parquet):
    with _SentBytes(stream_proxy) as moved:
        frame = pd.read_parquet(
            f"blobprox://{CONTAINER}/{parquet['name']}", columns=["a"], storage_options=parquet["options"]
        )
    assert list(frame.columns) == ["a"]
    assert frame["a"].tolist() == parquet["table"].column("a").to_pylist()
    _assert_moved_part(moved.sent, parquet["data"])


def test_pyarrow_reads_one_column(stream_proxy, parquet):
    fs = BlobproxFileSystem(**parquet["options"], skip_instance_cache=True)
    with _SentBytes(stream_proxy) as moved:
        table = pq.read_table(f"{CONTAINER}/{parquet['name']}", columns=["a"], filesystem=fs)
    assert table.column("a").equals(parquet["table"].column("a"))
    _assert_moved_part(moved.sent, parquet["data"])


def test_fsspec_open_reads_the_whole_blob(parquet):
    with fsspec.open(f"blobprox://{CONTAINER}/{parquet['name']}", "rb", **parquet["options"]) as f:
        assert f.read() == parquet["data"]


def test_fsspec_missing_blob_and_writes(parquet):
    fs = BlobproxFileSystem(**parquet["options"], skip_instance_cache=True)
    assert fs.info(f"{CONTAINER}/{parquet['name']}")["size"] == len(parquet["data"])
    with pytest.raises(FileNotFoundError):
        fs.info(f"{CONTAINER}/tables/missing.parquet")
    assert not fs.exists(f"{CONTAINER}/tables/missing.parquet")
    with pytest.raises(NotImplementedError):
        fs.open(f"{CONTAINER}/tables/new.parquet", "wb")
