"""Python client for blobprox, the encrypting proxy in front of Azure Blob Storage.

`Client` uploads, downloads, shares and opens blobs; `blobprox://container/name` paths work with
fsspec (pandas, pyarrow) through `blobprox_client.filesystem.BlobproxFileSystem`.
"""

from .client import Client, Data
from .errors import (
    AlreadyExistsError,
    AuthenticationError,
    BlobproxError,
    IntegrityError,
    InvalidRequestError,
    NotFoundError,
    UnavailableError,
    WrongKeyError,
)

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "BlobproxError",
    "Client",
    "Data",
    "IntegrityError",
    "InvalidRequestError",
    "NotFoundError",
    "UnavailableError",
    "WrongKeyError",
]
