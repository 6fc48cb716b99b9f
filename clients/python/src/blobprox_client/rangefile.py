"""A seekable, read-only file over a blob that reads by HTTP Range requests."""

from __future__ import annotations

import io
import os
from collections.abc import Callable


class RangeReader(io.RawIOBase):
    """Raw reads of `size` bytes through `fetch(first, last)`, which returns those bytes (inclusive).

    Wrap it in `io.BufferedReader`: small reads then share one request per buffer, and large reads
    go to one request each.
    """

    def __init__(self, size: int, fetch: Callable[[int, int], bytes], name: str) -> None:
        super().__init__()
        self.size, self.name = size, name
        self._fetch, self._position = fetch, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.size - self._position)
        if want <= 0:
            return 0
        data = self._fetch(self._position, self._position + want - 1)
        if len(data) != want:
            raise OSError(f"asked for {want} bytes at {self._position}, got {len(data)}")
        memoryview(buffer)[:want] = data
        self._position += want
        return want
