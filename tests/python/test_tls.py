"""HTTPS served by blobprox itself (TLS_CERT_FILE, TLS_KEY_FILE, TLS_CLIENT_CA_FILE): clients
verifying against a CA made here, client certificates, HTTP/2 by ALPN, renewal by SIGHUP."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from interop import CONTAINER, clean_env, download, require_binary, start_blobprox_made_proxy, upload

# Private key encodings blobprox reads, and the PEM label each is written with.
KEY_FORMATS = {
    "ec-pkcs8": ("ec", serialization.PrivateFormat.PKCS8, b"-----BEGIN PRIVATE KEY-----"),
    "ec-sec1": ("ec", serialization.PrivateFormat.TraditionalOpenSSL, b"-----BEGIN EC PRIVATE KEY-----"),
    "rsa-pkcs1": ("rsa", serialization.PrivateFormat.TraditionalOpenSSL, b"-----BEGIN RSA PRIVATE KEY-----"),
    "rsa-pkcs8": ("rsa", serialization.PrivateFormat.PKCS8, b"-----BEGIN PRIVATE KEY-----"),
}
CURL_HTTP2_STREAM_ERROR = 92  # curl's exit code for a stream that was reset, not ended


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key(kind: str):
    return rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP256R1())


class TestCa:
    """A certificate authority made for the test, writing what it issues as PEM files."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, common_name: str):
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.subject = _name(common_name)
        self.cert = (
            self._builder(self.subject, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.pem = directory / f"{common_name.replace(' ', '-')}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def issue(self, common_name: str, *, client: bool = False, key_format: str = "ec-pkcs8"):
        """Writes <name>.crt and <name>.key with a new key: a server certificate for 127.0.0.1 and
        localhost, or a client certificate. Returns (cert, key) paths."""
        kind, private_format, _ = KEY_FORMATS[key_format]
        key = _new_key(kind)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = self._builder(_name(common_name), key.public_key()).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if not client:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path = self.directory / f"{common_name}.crt"
        key_path = self.directory / f"{common_name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(serialization.Encoding.PEM, private_format, serialization.NoEncryption())
        )
        return cert_path, key_path


def _tls_env(cert: Path, key: Path, **more: str) -> dict[str, str]:
    return {"BLOB_FORMAT": "stream", "TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), **more}


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("ca"), "blobprox test CA")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("other-ca"), "some other CA")


@pytest.fixture(autouse=True)
def trust_test_ca(monkeypatch, ca):
    """The interop helpers call `requests` without verify=; requests then verifies against
    REQUESTS_CA_BUNDLE, here the test CA alone."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca.pem))


@pytest.fixture(scope="module")
def https_proxy(launcher, tmp_path_factory, ca):
    cert, key = ca.issue("https-server")
    return start_blobprox_made_proxy(
        launcher, tmp_path_factory, "https", extra_env=_tls_env(cert, key), tls={"verify": str(ca.pem)}
    )


@pytest.fixture(scope="module")
def mtls_proxy(launcher, tmp_path_factory, ca):
    cert, key = ca.issue("mtls-server")
    client = ca.issue("hospital-client", client=True)
    return start_blobprox_made_proxy(
        launcher,
        tmp_path_factory,
        "mtls",
        extra_env=_tls_env(cert, key, TLS_CLIENT_CA_FILE=str(ca.pem)),
        tls={"verify": str(ca.pem), "cert": tuple(map(str, client))},
    )


def _served_certificate(url: str, ca: TestCa) -> x509.Certificate:
    """The certificate a new connection to `url` is served, verified against `ca`."""
    context = ssl.create_default_context(cafile=str(ca.pem))
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _upload(proxy, name: str, data: bytes) -> str:
    return upload(proxy.url, proxy.headers, CONTAINER, name, data, proxy.public_key_pem())


def _curl_command(proxy, ca: TestCa, path: str, output: Path, *args: str) -> list[str]:
    """`curl --http2` with the proxy's credentials, body to `output`, printing
    "<HTTP version> <status>"."""
    headers = [arg for name, value in proxy.headers.items() for arg in ("-H", f"{name}: {value}")]
    command = ["curl", "-sS", "--http2", "--cacert", str(ca.pem), "-o", str(output)]
    return command + ["-w", "%{http_version} %{http_code}", *headers, *args, f"{proxy.url}{path}"]


def _curl(*args, **kwargs) -> subprocess.CompletedProcess:
    """Runs `_curl_command` (same arguments) to its end."""
    return subprocess.run(_curl_command(*args, **kwargs), env=clean_env(), capture_output=True, text=True, timeout=120)


def test_requests_verifies_the_proxy_against_the_test_ca(https_proxy, ca, blob_name):
    data = os.urandom(2 * 1024 * 1024)
    name = blob_name(".bin")
    wrapped = _upload(https_proxy, name, data)
    response = download(https_proxy.url, https_proxy.headers, CONTAINER, name, wrapped, verify=str(ca.pem))
    assert response.status_code == 200, response.text
    assert response.content == data
    # The same request trusting only the public CAs fails: the proxy really serves the test CA's
    # certificate.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{https_proxy.url}/healthz", verify=requests.certs.where(), timeout=10)


def test_plain_http_to_the_tls_port_gets_no_api_answer(https_proxy):
    with socket.create_connection(("127.0.0.1", urlsplit(https_proxy.url).port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert not received.startswith(b"HTTP/"), received
    assert b"status" not in received, received


def test_a_client_that_never_finishes_its_handshake_is_disconnected(launcher, tmp_path_factory, ca):
    cert, key = ca.issue("impatient-server")
    env = _tls_env(cert, key, HEADER_READ_TIMEOUT_SECS="1")
    proxy = start_blobprox_made_proxy(launcher, tmp_path_factory, "handshake-timeout", extra_env=env, tls={})
    with socket.create_connection(("127.0.0.1", urlsplit(proxy.url).port), timeout=30) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, and then nothing
        assert sock.recv(65536) == b"", "the server should close the connection"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_both_served(https_proxy, ca, version):
    context = ssl.create_default_context(cafile=str(ca.pem))
    context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", urlsplit(https_proxy.url).port), timeout=10) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.version() == version.name.replace("_", ".")


@pytest.mark.parametrize("key_format", list(KEY_FORMATS))
def test_key_files_in_every_supported_encoding_serve_https(launcher, tmp_path_factory, ca, key_format):
    cert, key = ca.issue(f"server-{key_format}", key_format=key_format)
    assert key.read_bytes().startswith(KEY_FORMATS[key_format][2])
    proxy = start_blobprox_made_proxy(
        launcher, tmp_path_factory, f"key-{key_format}", extra_env=_tls_env(cert, key), tls={}
    )
    assert proxy.url.startswith("https://")
    assert proxy.public_key_pem().startswith("-----BEGIN PUBLIC KEY-----")


def test_a_client_certificate_from_the_ca_is_accepted_and_header_credentials_still_count(mtls_proxy, ca):
    client = tuple(map(str, ca.issue("another-client", client=True)))
    response = requests.get(f"{mtls_proxy.url}/key/public", headers=mtls_proxy.headers, cert=client, timeout=10)
    assert response.status_code == 200, response.text
    response = requests.get(f"{mtls_proxy.url}/key/public", cert=client, timeout=10)
    assert response.status_code == 401, response.text


def test_no_client_certificate_or_one_from_another_ca_gets_no_http_answer(mtls_proxy, other_ca):
    stranger = tuple(map(str, other_ca.issue("stranger", client=True)))
    for cert in (None, stranger):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"{mtls_proxy.url}/key/public", headers=mtls_proxy.headers, cert=cert, timeout=10)


def test_curl_http2_streams_an_upload_and_a_download_and_reads_a_range(https_proxy, ca, blob_name, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 123)
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    recipients = tmp_path / "public-keys.json"
    recipients.write_text(json.dumps({"me": https_proxy.public_key_pem()}))
    name = blob_name(".bin")
    answer = tmp_path / "answer.json"
    uploaded = _curl(
        https_proxy, ca, f"/upload/{CONTAINER}/{name}", answer,
        "-F", f"public-keys=<{recipients}", "-F", "overwrite=true", "-F", f"file=@{source}",
    )
    assert uploaded.returncode == 0 and uploaded.stdout == "2 200", (uploaded, answer.read_text())
    wrapped = json.loads(answer.read_text())["decryption_keys"]["me"]

    body = tmp_path / "body.bin"
    downloaded = _curl(https_proxy, ca, f"/download/{CONTAINER}/{name}", body, "-H", f"x-blob-key: {wrapped}")
    assert downloaded.returncode == 0 and downloaded.stdout == "2 200", downloaded
    assert body.read_bytes() == data

    first, last = 3 * 1024 * 1024 - 7, 3 * 1024 * 1024 + 70_000
    ranged = _curl(
        https_proxy, ca, f"/download/{CONTAINER}/{name}", body,
        "-H", f"x-blob-key: {wrapped}", "-H", f"Range: bytes={first}-{last}",
    )
    assert ranged.returncode == 0 and ranged.stdout == "2 206", ranged
    assert body.read_bytes() == data[first : last + 1]


def test_a_tampered_segment_over_http2_resets_the_stream(https_proxy, ca, blob_name, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    name = blob_name(".bin")
    wrapped = _upload(https_proxy, name, data)
    path = https_proxy.blob_path(name)
    stored = bytearray(path.read_bytes())
    # A middle segment: the first and last are checked before the headers go out, this one only
    # when the body reaches it.
    stored[len(stored) // 2] ^= 0x01
    path.write_bytes(bytes(stored))

    body = tmp_path / "body.bin"
    result = _curl(https_proxy, ca, f"/download/{CONTAINER}/{name}", body, "-H", f"x-blob-key: {wrapped}")
    assert result.returncode == CURL_HTTP2_STREAM_ERROR, result
    assert result.stdout == "2 200", result
    assert 0 < body.stat().st_size < len(data)
    assert data.startswith(body.read_bytes())


def test_sigterm_lets_an_http2_download_finish(launcher, tmp_path_factory, ca, blob_name, tmp_path):
    cert, key = ca.issue("draining-server")
    proxy = start_blobprox_made_proxy(launcher, tmp_path_factory, "draining", extra_env=_tls_env(cert, key), tls={})
    data = os.urandom(4 * 1024 * 1024)
    name = blob_name(".bin")
    wrapped = _upload(proxy, name, data)
    body = tmp_path / "body.bin"
    command = _curl_command(proxy, ca, f"/download/{CONTAINER}/{name}", body, "-H", f"x-blob-key: {wrapped}")
    slow = subprocess.Popen(
        [*command[:1], "--limit-rate", "1M", *command[1:]], env=clean_env(), stdout=subprocess.PIPE, text=True
    )
    _wait_for(lambda: body.exists() and body.stat().st_size, bool)
    proxy.process.send_signal(signal.SIGTERM)
    stdout, _ = slow.communicate(timeout=60)
    assert slow.returncode == 0 and stdout == "2 200", (slow.returncode, stdout)
    assert body.read_bytes() == data
    assert proxy.process.wait(timeout=30) == 0


def test_sighup_serves_a_renewed_certificate_and_keeps_it_over_a_bad_pair(launcher, tmp_path_factory, ca):
    cert, key = ca.issue("renewed-server")
    proxy = start_blobprox_made_proxy(
        launcher, tmp_path_factory, "renewal", extra_env=_tls_env(cert, key), tls={}
    )
    original = _served_certificate(proxy.url, ca)

    renewed_cert, renewed_key = ca.issue("renewal-next")
    cert.write_bytes(renewed_cert.read_bytes())
    key.write_bytes(renewed_key.read_bytes())
    proxy.process.send_signal(signal.SIGHUP)
    renewed = _wait_for(lambda: _served_certificate(proxy.url, ca), lambda served: served != original)
    assert renewed.serial_number == x509.load_pem_x509_certificate(cert.read_bytes()).serial_number

    # A certificate whose key is not in TLS_KEY_FILE: refused, the renewed pair stays.
    mismatched, _ = ca.issue("mismatched")
    cert.write_bytes(mismatched.read_bytes())
    proxy.process.send_signal(signal.SIGHUP)
    line = _wait_for(
        lambda: next((l for l in proxy.log_text().splitlines() if "not reloaded" in l), None), bool
    )
    assert "does not fit" in line, line
    assert _served_certificate(proxy.url, ca) == renewed
    assert requests.get(f"{proxy.url}/healthz", timeout=10).status_code == 200


def _wait_for(probe, done, timeout: float = 20):
    """Polls `probe()` until `done(value)`; the value. SIGHUP is handled asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r} after {timeout} s", pytrace=False)
        time.sleep(0.05)


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"TLS_CERT_FILE": "cert"}, "TLS_KEY_FILE is not"),
        ({"TLS_KEY_FILE": "key"}, "TLS_CERT_FILE is not"),
        ({"TLS_CLIENT_CA_FILE": "ca"}, "TLS_CLIENT_CA_FILE needs HTTPS"),
        ({"TLS_CERT_FILE": "cert", "TLS_KEY_FILE": "other-key"}, "does not fit"),
        ({"TLS_CERT_FILE": "cert", "TLS_KEY_FILE": "cert"}, "no PEM private key"),
        ({"TLS_CERT_FILE": "missing", "TLS_KEY_FILE": "key"}, "cannot read TLS_CERT_FILE"),
    ],
)
def test_bad_tls_settings_stop_the_start_with_one_line(ca, tmp_path, settings, expected):
    files = dict(zip(("cert", "key"), ca.issue("start-check")))
    files["other-key"] = ca.issue("start-check-other")[1]
    files["ca"] = ca.pem
    files["missing"] = tmp_path / "missing.pem"
    env = clean_env(**{name: str(files[which]) for name, which in settings.items()})
    result = subprocess.run(
        [str(require_binary()), "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr, result.stderr
