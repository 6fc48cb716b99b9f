"""Shared helpers for the Python interoperability suite: real `blobprox` processes on free ports.

The suite talks to the proxy the way the original service's users did (Python `requests`) and
checks the stored data with Python's `cryptography` (Fernet, RSA-OAEP), so that blobprox stays
interchangeable with the FastAPI proxy it replaces. See /work/shared/API.md for the contract.

Environment:
  BLOBPROX_BIN   path of the binary to test (default: <repo>/target/debug/blobprox)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

REPO = Path(__file__).resolve().parents[2]
BLOBPROX_BIN = Path(os.environ.get("BLOBPROX_BIN", REPO / "target" / "debug" / "blobprox"))
CONTAINER = "interop"
HTTP_TIMEOUT = 60
STARTUP_TIMEOUT = 20

# RSA-OAEP exactly as the original proxy used it: MGF1(SHA-256), SHA-256, no label.
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)

# requests honours HTTP(S)_PROXY; the proxy under test is always local.
os.environ["NO_PROXY"] = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))


def clean_env(**settings: str) -> dict[str, str]:
    """The environment of a child process: PATH and HOME from this one, then `settings` (what the
    test means). Nothing else leaks in from the caller's shell: no API_KEY, STORAGE_URL, RUST_LOG
    or HTTP(S)_PROXY. Start a blobprox child in a temp dir too, or it loads the repository's .env."""
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    env.update(settings)
    return env


def require_binary() -> Path:
    if not BLOBPROX_BIN.is_file():
        pytest.fail(
            f"blobprox binary not found at {BLOBPROX_BIN}: run `cargo build` in {REPO} "
            "or set BLOBPROX_BIN",
            pytrace=False,
        )
    return BLOBPROX_BIN


def run_blobprox(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Runs a one-shot blobprox command, failing the test with its output if it fails."""
    binary = require_binary()
    result = subprocess.run(
        [str(binary), *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        pytest.fail(
            f"`blobprox {' '.join(args)}` exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
            pytrace=False,
        )
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_credentials(creddir: Path) -> tuple[dict, str]:
    """The `<ts>_blobprox.json` client values and the `<ts>_blobprox_encrypted.key` API_KEY."""
    jsons = sorted(creddir.glob("*_blobprox.json"))
    keys = sorted(creddir.glob("*_blobprox_encrypted.key"))
    assert len(jsons) == 1, f"expected one *_blobprox.json in {creddir}, found {jsons}"
    assert len(keys) == 1, f"expected one *_blobprox_encrypted.key in {creddir}, found {keys}"
    client = json.loads(jsons[0].read_text())
    assert set(client) >= {"salt", "decryption_key", "key"}, client
    return client, keys[0].read_text().strip()


def auth_headers(client: dict) -> dict[str, str]:
    return {
        "x-decryption-key": client["decryption_key"],
        "x-salt": client["salt"],
        "x-comparison-key": client["key"],
    }


# --- the client calls: what the original's users did with `requests` --------------------------
# (test_readme_client.py keeps one test that spells the README's calls out in full.)

# The two ways a download may carry the wrapped key: `by` value -> what a failure message calls it.
DOWNLOAD_WAYS = {"field": "decryption-key field", "header": "x-blob-key header"}


def fetch_public_key(url: str, headers: dict[str, str]) -> str:
    """GET /key/public, which must answer 200, and the PEM it serves."""
    response = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()["public_key"]


def post_upload(
    url: str,
    headers: dict[str, str],
    container: str,
    name: str,
    content: bytes | Path,
    public_key: str | dict[str, str],
    *,
    as_form_fields: bool = False,
    **fields: str,
) -> requests.Response:
    """POST /upload/<container>/<name>; the answer is not checked.

    content: bytes, sent as the `file` part named after the blob's last path segment, or a Path
        whose open file is streamed as the part (the README's `files={"file": f}`).
    public_key: one PEM, for recipient "me", or a {recipient: PEM} map; sent as JSON `public-keys`.
    fields: further form fields, e.g. overwrite="true".
    as_form_fields: `public-keys` and `fields` go as ordinary form fields (`data=`, before the
        file) instead of as parts in `files=` after the file, the way the README sent them.
    """
    recipients = {"me": public_key} if isinstance(public_key, str) else public_key
    form = {"public-keys": json.dumps(recipients), **fields}
    if isinstance(content, (bytes, bytearray)):
        opened = contextlib.nullcontext((name.rsplit("/", 1)[-1], content))
    else:
        opened = open(content, "rb")
    with opened as file_part:
        if as_form_fields:
            parts = {"data": form, "files": {"file": file_part}}
        else:
            parts = {"files": {"file": file_part, **form}}
        return requests.post(
            f"{url}/upload/{container}/{name}", headers=headers, timeout=HTTP_TIMEOUT, **parts
        )


def upload_body(*args, **kwargs) -> dict:
    """`post_upload` (same arguments), which must answer 200, and the JSON body of its answer."""
    response = post_upload(*args, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def upload(*args, **kwargs) -> str:
    """`post_upload` (same arguments), which must answer 200, and the wrapped key it returns for
    recipient "me"."""
    return upload_body(*args, **kwargs)["decryption_keys"]["me"]


def download(
    url: str,
    headers: dict[str, str],
    container: str,
    name: str,
    wrapped: str,
    *,
    by: str = "field",
    **kwargs,
) -> requests.Response:
    """GET /download/<container>/<name>; the answer is not checked. The wrapped key goes in the
    `decryption-key` form field (by="field", the README's way) or the `x-blob-key` header
    (by="header"); `kwargs` go to `requests.get` (e.g. stream=True)."""
    target = f"{url}/download/{container}/{name}"
    if by == "field":
        return requests.get(
            target, headers=headers, data={"decryption-key": wrapped}, timeout=HTTP_TIMEOUT, **kwargs
        )
    if by == "header":
        return requests.get(target, headers={**headers, "x-blob-key": wrapped}, timeout=HTTP_TIMEOUT, **kwargs)
    raise ValueError(f"by must be one of {list(DOWNLOAD_WAYS)}, not {by!r}")


def download_both_ways(*args, **kwargs) -> Iterator[tuple[str, requests.Response]]:
    """`download` (same arguments but `by`) with the key in the form field, then in the header:
    yields (how, response), each request made only when the loop asks for it."""
    for by, how in DOWNLOAD_WAYS.items():
        yield how, download(*args, by=by, **kwargs)


@dataclass
class Proxy:
    """A running blobprox server and everything a test needs to talk to it and inspect it."""

    url: str
    headers: dict[str, str]
    keydir: Path
    datadir: Path
    log: Path
    process: subprocess.Popen
    container: str = CONTAINER
    client: dict = field(default_factory=dict)
    api_key: str = ""

    def blob_path(self, name: str, container: str | None = None) -> Path:
        """Where the local-directory backend keeps blob `name`."""
        return self.datadir / (container or self.container) / name

    def public_key_pem(self) -> str:
        return fetch_public_key(self.url, self.headers)

    def private_key(self):
        pem = (self.keydir / "rsa_private_key.pem").read_bytes()
        return serialization.load_pem_private_key(pem, password=None)

    def unwrap(self, wrapped_b64: str) -> bytes:
        """Opens a wrapped key with the proxy's private key file, as a Python proxy would."""
        return self.private_key().decrypt(base64.b64decode(wrapped_b64, validate=True), OAEP)

    def wrap(self, key_text: bytes) -> str:
        """Wraps key text for this proxy the way the original did: base64(RSA-OAEP(text))."""
        public = serialization.load_pem_public_key(self.public_key_pem().encode())
        return base64.b64encode(public.encrypt(key_text, OAEP)).decode("ascii")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError as error:
            return f"(no log: {error})"


class ProxyLauncher:
    """Starts blobprox servers and stops every one of them at the end of the session."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory):
        self._tmp = tmp_path_factory
        self._running: list[tuple[subprocess.Popen, object]] = []

    def start(
        self,
        *,
        keydir: Path,
        api_key: str,
        headers: dict[str, str],
        client: dict | None = None,
        containers: tuple[str, ...] = (CONTAINER,),
        extra_env: dict[str, str] | None = None,
        name: str = "proxy",
        tls: dict | None = None,
    ) -> Proxy:
        """tls: for a proxy started with TLS_* files in extra_env, the `requests` arguments
        (verify=, cert=) its health probe needs; the URL is then https://."""
        binary = require_binary()
        workdir = self._tmp.mktemp(name)
        datadir = (workdir / "data").resolve()
        for container in containers:
            (datadir / container).mkdir(parents=True)
        log = workdir / "blobprox.log"
        port = free_port()
        settings = {
            "API_KEY": api_key,
            "KEY_VAULT_PATH": str(keydir.resolve()),
            "STORAGE_URL": datadir.as_uri(),  # file:///tmp/...
            "BLOB_FORMAT": "fernet",
            # One session server sees every test's wrong credentials from 127.0.0.1: no throttling.
            "AUTH_FAILURES_PER_MINUTE": "0",
        }
        settings.update(extra_env or {})  # may override the defaults above, e.g. BLOB_FORMAT
        env = clean_env(**settings)
        log_file = open(log, "wb")
        process = subprocess.Popen(
            [str(binary), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,  # no stray .env from the repository
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self._running.append((process, log_file))
        url = f"{'http' if tls is None else 'https'}://127.0.0.1:{port}"
        proxy = Proxy(
            url=url,
            headers=headers,
            keydir=keydir,
            datadir=datadir,
            log=log,
            process=process,
            client=client or {},
            api_key=api_key,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = "no answer yet"
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"blobprox serve exited with {process.returncode} before it was healthy; log:\n"
                    + proxy.log_text(),
                    pytrace=False,
                )
            try:
                response = requests.get(f"{url}/healthz", timeout=2, **(tls or {}))
                if response.status_code == 200:
                    return proxy
                last = f"{response.status_code} {response.text!r}"
            except requests.RequestException as error:
                last = repr(error)
            if time.monotonic() > deadline:
                pytest.fail(
                    f"blobprox did not answer GET /healthz with 200 within {STARTUP_TIMEOUT} s "
                    f"(last: {last}); log:\n" + proxy.log_text(),
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop_all(self) -> None:
        for process, log_file in self._running:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
            log_file.close()
        self._running.clear()


def start_blobprox_made_proxy(launcher, tmp_path_factory, name: str, extra_env=None, tls=None) -> Proxy:
    """Starts a proxy with keys and credentials made by `blobprox keygen` / `blobprox credentials`."""
    base = tmp_path_factory.mktemp(name)
    keydir = base / "keys"
    creddir = base / "creds"
    run_blobprox("keygen", "-p", str(keydir), cwd=base)
    run_blobprox("credentials", "-p", str(creddir), cwd=base)
    for key_file in ("rsa_private_key.pem", "rsa_public_key.pem", "symmetric_key.key"):
        assert (keydir / key_file).is_file(), f"blobprox keygen did not write {key_file}"
    client, api_key = read_credentials(creddir)
    return launcher.start(
        keydir=keydir,
        api_key=api_key,
        headers=auth_headers(client),
        client=client,
        extra_env=extra_env,
        name=f"{name}-server",
        tls=tls,
    )
