"""The exceptions of the client: one class per meaning, all deriving from `BlobproxError`."""

from __future__ import annotations

from typing import Any

import requests


class BlobproxError(Exception):
    """Any failure of a blobprox call.

    `status` is the HTTP status of the answer (None when there was none) and `detail` the server's
    `detail` (a string, or FastAPI's list for 422), or the client's own explanation.
    """

    def __init__(self, detail: Any, status: int | None = None) -> None:
        super().__init__(f"{status}: {detail}" if status is not None else str(detail))
        self.detail = detail
        self.status = status


class AuthenticationError(BlobproxError):
    """The proxy refused the credentials (401)."""


class NotFoundError(BlobproxError):
    """The container or blob does not exist (404)."""


class AlreadyExistsError(BlobproxError):
    """The blob exists and `overwrite` was not set (409)."""


class WrongKeyError(BlobproxError):
    """The wrapped key is missing, not for this proxy, or does not open this blob (403, or 400 about the key)."""


class IntegrityError(BlobproxError):
    """The stored blob failed authentication: refused (502) or cut off in the middle of the body."""


class UnavailableError(BlobproxError):
    """The proxy or its storage is unavailable or busy (503/429 after the retries, 502/507, no connection)."""


class InvalidRequestError(BlobproxError):
    """The proxy refused the request as malformed (400, 413, 416, 422): bad names, fields or limits."""


# Phrases of the proxy's 400 details that are about the wrapped key rather than the request's shape.
_KEY_DETAILS = ("wrapped key", "x-blob-key", "the key is not", "does not open")


def error_from_response(response: requests.Response) -> BlobproxError:
    """The exception that an error answer means."""
    try:
        detail: Any = response.json()["detail"]
    except (ValueError, KeyError, TypeError):
        detail = response.text or response.reason
    status = response.status_code
    text = detail if isinstance(detail, str) else ""
    if status == 401:
        cls: type[BlobproxError] = AuthenticationError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AlreadyExistsError
    elif status == 403 or (status == 400 and any(p in text for p in _KEY_DETAILS)):
        cls = WrongKeyError
    elif status == 502 and "failed authentication" in text:
        cls = IntegrityError
    elif status in (429, 502, 503, 504, 507):
        cls = UnavailableError
    elif 400 <= status < 500:
        cls = InvalidRequestError
    else:
        cls = BlobproxError
    return cls(detail, status)
