"""Fixtures for the Python interoperability suite (helpers live in interop.py).

BLOBPROX_BIN selects the binary under test (default: <repo>/target/debug/blobprox).
"""

from __future__ import annotations

import uuid

import pytest

from interop import Proxy, ProxyLauncher, start_blobprox_made_proxy


@pytest.fixture(scope="session")
def launcher(tmp_path_factory):
    launcher = ProxyLauncher(tmp_path_factory)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="session")
def proxy(launcher, tmp_path_factory) -> Proxy:
    """A proxy (BLOB_FORMAT=fernet) whose keys and credentials blobprox made itself."""
    return start_blobprox_made_proxy(launcher, tmp_path_factory, "blobprox-made")


@pytest.fixture(scope="session")
def stream_proxy(launcher, tmp_path_factory) -> Proxy:
    """Like `proxy`, but writing the streaming blob format (BLOB_FORMAT=stream), which serves ranges."""
    return start_blobprox_made_proxy(
        launcher, tmp_path_factory, "blobprox-stream", extra_env={"BLOB_FORMAT": "stream"}
    )


@pytest.fixture
def url(proxy) -> str:
    return proxy.url


@pytest.fixture
def headers(proxy) -> dict[str, str]:
    return dict(proxy.headers)


@pytest.fixture
def blob_name(request):
    """A blob name no other test uses: `<test name>-<random>.txt` unless a suffix is given."""

    def make(suffix: str = ".txt") -> str:
        base = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")
        return f"{base}-{uuid.uuid4().hex[:8]}{suffix}"

    return make
