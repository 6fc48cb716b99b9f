"""A multipart/form-data upload body that streams its file part: text fields first, then the file
in chunks, so that no more than one chunk of the file is in memory at a time."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


def _quote(name: str) -> str:
    """A name as a quoted-string of a Content-Disposition parameter (as browsers and requests do)."""
    return '"' + name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A") + '"'


class MultipartBody:
    """A form of text fields and one file part, iterated as bytes.

    `opener` opens the file part's content afresh for each iteration (the body can be sent again
    on a retry); `size` is its length in bytes, or None when unknown. `on_chunk` hears how many file
    bytes each chunk carried.
    """

    def __init__(
        self,
        fields: list[tuple[str, str]],
        file_field: str,
        filename: str,
        opener: Callable[[], AbstractContextManager[BinaryIO]],
        size: int | None,
        on_chunk: Callable[[int], None] = lambda n: None,
    ) -> None:
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        head = b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; name={_quote(name)}\r\n\r\n".encode()
            + value.encode()
            + b"\r\n"
            for name, value in fields
        )
        self._head = (
            head
            + (
                f"--{boundary}\r\nContent-Disposition: form-data; name={_quote(file_field)}; "
                f"filename={_quote(filename)}\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()
        )
        self._tail = f"\r\n--{boundary}--\r\n".encode()
        self._opener, self.size, self._on_chunk = opener, size, on_chunk

    def length(self) -> int | None:
        """The whole body's length in bytes, when the file's size is known."""
        return None if self.size is None else len(self._head) + self.size + len(self._tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self._head
        sent = 0
        with self._opener() as file:
            while chunk := file.read(CHUNK_SIZE):
                sent += len(chunk)
                self._on_chunk(len(chunk))
                yield chunk
        if self.size is not None and sent != self.size:
            raise OSError(f"the file changed size while it was sent: {self.size} bytes expected, {sent} read")
        yield self._tail


class SizedBody:
    """An iterable body with a length, so that requests sends Content-Length instead of chunks."""

    def __init__(self, body: MultipartBody, length: int) -> None:
        self._body, self._length = body, length

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)


def file_size(file: BinaryIO) -> int | None:
    """The bytes left from the current position of a seekable file, or None."""
    try:
        if not file.seekable():
            return None
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        file.seek(start)
    except (AttributeError, OSError):
        return None
    return end - start
