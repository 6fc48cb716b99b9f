"""Helpers for the tests of the Python client (clients/python): clients for the suite's proxies,
and the proxy's own counters from /metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from blobprox_client import Client

from interop import HTTP_TIMEOUT, Proxy


def credentials_file(proxy: Proxy, directory: Path) -> Path:
    """The proxy's client credentials as `blobprox credentials` writes them (`<ts>_blobprox.json`)."""
    path = directory / "1700000000_blobprox.json"
    path.write_text(json.dumps(proxy.client))
    return path


def client_for(proxy: Proxy, **options) -> Client:
    """A client with the proxy's credentials."""
    values = proxy.client
    return Client(proxy.url, values["decryption_key"], values["salt"], values["key"], **options)


def metric(proxy: Proxy, name: str, **labels: str) -> float:
    """The sum of a counter of the proxy's /metrics over the series that carry `labels`."""
    text = requests.get(f"{proxy.url}/metrics", timeout=HTTP_TIMEOUT).text
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}(?:{{(.*?)}})? (\S+)$", text, re.MULTILINE):
        series = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(series.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def wait_until(condition: Callable[[], bool], what: str, limit: float = HTTP_TIMEOUT) -> None:
    """Polls `condition` until it holds; fails the test (rather than hang) after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting {limit} s for {what}", pytrace=False)
        time.sleep(0.01)
