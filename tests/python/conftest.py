"""Fixtures for the Python interoperability suite (helpers live in interop.py).

BLOBPROX_BIN selects the binary under test (default: <repo>/target/debug/blobprox).
"""

from __future__ import annotations

import uuid

import pytest

from interop import Proxy, ProxyLauncher, auth_headers, read_credentials, run_blobprox


@pytest.fixture(scope="session")
def launcher(tmp_path_factory):
    launcher = ProxyLauncher(tmp_path_factory)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="session")
def proxy(launcher, tmp_path_factory) -> Proxy:
    """A proxy whose keys and credentials were made by `blobprox keygen` / `blobprox credentials`."""
    base = tmp_path_factory.mktemp("blobprox-made")
    keydir = base / "keys"
    creddir = base / "creds"
    run_blobprox("keygen", "-p", str(keydir), cwd=base)
    run_blobprox("credentials", "-p", str(creddir), cwd=base)
    for name in ("rsa_private_key.pem", "rsa_public_key.pem", "symmetric_key.key"):
        assert (keydir / name).is_file(), f"blobprox keygen did not write {name}"
    client, api_key = read_credentials(creddir)
    return launcher.start(
        keydir=keydir,
        api_key=api_key,
        headers=auth_headers(client),
        client=client,
        name="blobprox-made-server",
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
