"""`blobprox://container/name` as an fsspec filesystem (read-only), registered under the protocol
`blobprox` by the package's entry point, so that pandas and pyarrow read blobs by byte ranges."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from fsspec import AbstractFileSystem  # type: ignore[import-untyped]

from .client import DEFAULT_BLOCK_SIZE, Client
from .errors import NotFoundError


class BlobproxFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Blobs of one proxy as read-only files; a path is `container/blob name`.

    Storage options: `endpoint` (the proxy's URL), `credentials` (path of the `<ts>_blobprox.json`
    that `blobprox credentials` wrote) and `blob_key` (the wrapped key of the blob to read, or a
    mapping of paths to wrapped keys). The proxy has no listing, so only named blobs exist here.
    """

    protocol = "blobprox"

    def __init__(
        self,
        endpoint: str,
        credentials: str | os.PathLike[str],
        blob_key: str | Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = Client.from_credentials_file(credentials, endpoint)
        self.blob_key = blob_key

    def _split(self, path: str) -> tuple[str, str, str]:
        """The container, the blob name and the wrapped key for `path`."""
        path = self._strip_protocol(path)
        container, _, name = path.partition("/")
        if not name:
            raise ValueError(f"{path!r} names no blob: paths are container/blob-name")
        key = self.blob_key.get(path) if isinstance(self.blob_key, Mapping) else self.blob_key
        if key is None:
            raise ValueError(f"no blob_key for {path!r}: pass the wrapped key in the storage option blob_key")
        return container, name, key

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """The size of the blob at `path` (a HEAD request with its key)."""
        container, name, key = self._split(path)
        try:
            size = self.client._size(container, name, key)
        except NotFoundError as error:
            raise FileNotFoundError(path) from error
        return {"name": self._strip_protocol(path), "size": size, "type": "file"}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """A blob path lists itself; there is no listing of containers."""
        entry = self.info(path)
        return [entry] if detail else [entry["name"]]

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        if mode != "rb":
            raise NotImplementedError("blobprox:// is read-only: write with Client.upload, which names recipients")
        container, name, key = self._split(path)
        try:
            return self.client.open(container, name, key, block_size=block_size or DEFAULT_BLOCK_SIZE)
        except NotFoundError as error:
            raise FileNotFoundError(path) from error
