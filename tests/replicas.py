"""Three blobprox replicas on one Azurite behind haproxy: proof that the proxy is stateless.

Run by scripts/test.sh after it started Azurite:

    BLOBPROX_TEST_AZURE_CONNECTION_STRING=... BLOBPROX_BIN=target/debug/blobprox \
        target/pyenv/bin/python tests/replicas.py

Several clients upload and download through haproxy (health checks on /readyz) while one replica
is SIGKILLed and started again. Checked: every upload answered 200 downloads byte for byte from
every replica; what failed, failed cleanly (a refused connection, haproxy's 502/503/504, or a
download cut short that the client notices; never a 500 and never a hang); the restarted
replica serves again; SIGTERM turns /readyz "draining" at once, haproxy takes the replica out,
and the upload in flight still finishes with 200.
Bounded: every request has a timeout, the load a fixed count of operations, the run a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

sys.path.insert(0, str(Path(__file__).resolve().parent / "python"))
from interop import clean_env  # noqa: E402  (the suite's one allow-listed child environment)

REPO = Path(__file__).resolve().parents[1]
BLOBPROX_BIN = Path(os.environ.get("BLOBPROX_BIN", REPO / "target" / "debug" / "blobprox"))
CONTAINER = "replicas"
REPLICAS = 3
CLIENTS = 6
OPERATIONS_PER_CLIENT = 24
KILL_AFTER_OPERATIONS = 40
TIMEOUT = 30
DEADLINE = time.monotonic() + 240
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

passed = 0


def check(condition: bool, what: str) -> None:
    global passed
    if not condition:
        print(f"replicas: FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    passed += 1
    print(f"replicas: ok: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, seconds: float = 20) -> None:
    end = min(time.monotonic() + seconds, DEADLINE)
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    check(False, f"{what} within {seconds} s")


class Replica:
    """One `blobprox serve` process on its own port; started again on the same port."""

    def __init__(self, index: int, env: dict[str, str], logs: Path):
        self.name = f"r{index}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PORT": str(self.port)}
        self.log = logs / f"{self.name}.log"
        self.work = logs  # the working directory: a temp dir, where no .env is
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [str(BLOBPROX_BIN), "serve"], cwd=self.work, env=self.env, stdout=log, stderr=log
            )
        wait_for(self.ready, f"{self.name} ready")

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def in_flight(self) -> int:
        """Requests being served right now, the asking one included, from /metrics."""
        text = requests.get(f"{self.url}/metrics", timeout=TIMEOUT).text
        return next(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith("blobprox_requests_in_flight ")
        )

    def served(self, route_prefix: str) -> int:
        """Requests of routes starting with `route_prefix` answered 200, from /metrics."""
        text = requests.get(f"{self.url}/metrics", timeout=TIMEOUT).text
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines()
            if line.startswith(f'blobprox_requests_total{{route="{route_prefix}')
            and 'status="200"' in line
        )


class Haproxy:
    """haproxy in front of the replicas, checking /readyz every 200 ms."""

    def __init__(self, replicas: list[Replica], work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = work / "haproxy.sock"
        servers = "\n".join(
            f"    server {r.name} 127.0.0.1:{r.port} check inter 200ms fall 1 rise 2" for r in replicas
        )
        config = work / "haproxy.cfg"
        config.write_text(f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
frontend blobprox
    bind 127.0.0.1:{self.port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
{servers}
""")
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)],
            env=clean_env(),
            stdout=(work / "haproxy.log").open("w"),
            stderr=subprocess.STDOUT,
        )

    def status(self, server: str) -> str:
        """UP, DOWN, ... as haproxy's stats say."""
        data = b""
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.socket))
            except OSError:  # not started yet
                return "unknown"
            s.sendall(b"show stat\n")
            while chunk := s.recv(65536):
                data += chunk
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "replicas" and fields[1] == server:
                return fields[17]
        return "unknown"


def credentials(work: Path) -> tuple[dict[str, str], Path]:
    for command, directory in (("keygen", "keys"), ("credentials", "credentials")):
        subprocess.run(
            [str(BLOBPROX_BIN), command, "-p", str(work / directory)],
            cwd=work, env=clean_env(), check=True, capture_output=True,
        )
    client = json.loads(next((work / "credentials").glob("*_blobprox.json")).read_text())
    headers = {
        "x-decryption-key": client["decryption_key"],
        "x-salt": client["salt"],
        "x-comparison-key": client["key"],
    }
    return headers, next((work / "credentials").glob("*_blobprox_encrypted.key"))


def multipart(recipients: str, data: bytes) -> tuple[bytes, bytes, str]:
    """The head and tail around the file's bytes, and the content type."""
    head = (
        '--B\r\nContent-Disposition: form-data; name="public-keys"\r\n\r\n'
        f"{recipients}\r\n"
        '--B\r\nContent-Disposition: form-data; name="file"; filename="f"\r\n\r\n'
    ).encode()
    return head, b"\r\n--B--\r\n", "multipart/form-data; boundary=B"


class Load:
    """Clients uploading and downloading through haproxy; records what succeeded and failed."""

    def __init__(self, url: str, headers: dict[str, str], recipients: str):
        self.url, self.headers, self.recipients = url, headers, recipients
        self.lock = threading.Lock()
        self.uploaded: dict[str, tuple[bytes, str]] = {}
        self.failures: list[str] = []
        self.operations = 0
        self.continued = threading.Event()

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        for n in range(OPERATIONS_PER_CLIENT):
            if time.monotonic() > DEADLINE - 60:
                return
            with self.lock:
                names = list(self.uploaded)
            if names and rng.random() < 0.4:
                self.download(rng.choice(names))
            else:
                self.upload(f"c{seed}/{n}-{uuid.uuid4().hex[:8]}.bin", rng.randbytes(rng.randint(1, 1 << 20)))
            with self.lock:
                self.operations += 1
            if self.operations >= KILL_AFTER_OPERATIONS + 20:
                # Keep the rest of the load for after the restart.
                self.continued.wait(timeout=60)

    def failed(self, what: str, error: str) -> None:
        with self.lock:
            self.failures.append(f"{what}: {error}")

    def upload(self, name: str, data: bytes) -> None:
        head, tail, content_type = multipart(self.recipients, data)
        try:
            response = requests.post(
                f"{self.url}/upload/{CONTAINER}/{name}",
                data=head + data + tail,
                headers={**self.headers, "content-type": content_type},
                timeout=TIMEOUT,
            )
        except requests.RequestException as error:
            return self.failed(f"upload {name}", type(error).__name__)
        if response.status_code == 200:
            with self.lock:
                self.uploaded[name] = (data, response.json()["decryption_keys"]["me"])
        else:
            self.failed(f"upload {name}", str(response.status_code))

    def download(self, name: str) -> None:
        data, key = self.uploaded[name]
        try:
            response = requests.get(
                f"{self.url}/download/{CONTAINER}/{name}",
                headers={**self.headers, "x-blob-key": key},
                timeout=TIMEOUT,
            )
        except requests.RequestException as error:
            return self.failed(f"download {name}", type(error).__name__)
        if response.status_code != 200:
            self.failed(f"download {name}", str(response.status_code))
        elif response.content != data:
            self.failed(f"download {name}", "different bytes")


def clean_failure(failure: str) -> bool:
    """A refused or dropped connection, haproxy saying no server answered, or a download whose
    body was cut short where the client sees it (ChunkedEncodingError): never a 500, a hang, or
    a short body taken for a whole one."""
    return failure.rsplit(": ", 1)[1] in {"ConnectionError", "ChunkedEncodingError", "502", "503", "504"}


def main() -> None:
    connection_string = os.environ["BLOBPROX_TEST_AZURE_CONNECTION_STRING"]
    with contextlib.suppress(ResourceExistsError):  # a second run on the same Azurite
        BlobServiceClient.from_connection_string(connection_string).create_container(CONTAINER)
    work = Path(tempfile.mkdtemp(prefix="blobprox-replicas-"))
    headers, api_key_file = credentials(work)
    env = clean_env(
        PROD="true",
        HOST="127.0.0.1",
        KEY_VAULT_PATH=str(work / "keys"),
        API_KEY_FILE=str(api_key_file),
        AZURE_STORAGE_CONNECTION_STRING=connection_string,
        SHUTDOWN_GRACE_SECS="20",
        LOG_FORMAT="text",
    )
    replicas = [Replica(i, env, work) for i in range(1, REPLICAS + 1)]
    haproxy = None
    try:
        for replica in replicas:
            replica.start()
        haproxy = Haproxy(replicas, work)
        wait_for(lambda: all(haproxy.status(r.name) == "UP" for r in replicas), "haproxy sees every replica UP")
        check(True, f"{REPLICAS} replicas on one Azurite behind haproxy, health checks on /readyz")
        public_key = requests.get(f"{haproxy.url}/key/public", headers=headers, timeout=TIMEOUT).json()
        recipients = json.dumps({"me": public_key["public_key"]})
        run(replicas, haproxy, Load(haproxy.url, headers, recipients), headers)
        drain(replicas[0], replicas[1:], haproxy, headers, recipients)
    finally:
        for process in [r.process for r in replicas] + [haproxy and haproxy.process]:
            if process and process.poll() is None:
                process.kill()
                process.wait()
    print(f"replicas: {passed} passed, 0 failed")


def run(replicas: list[Replica], haproxy: Haproxy, load: Load, headers: dict[str, str]) -> None:
    victim = replicas[1]
    threads = [threading.Thread(target=load.client, args=(seed,)) for seed in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_for(lambda: load.operations >= KILL_AFTER_OPERATIONS, f"{KILL_AFTER_OPERATIONS} operations", 120)
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    started = time.monotonic()
    try:
        requests.get(f"{victim.url}/key/public", headers=headers, timeout=5)
        refused = False
    except requests.ConnectionError:
        refused = True
    check(refused and time.monotonic() - started < 5, f"{victim.name} SIGKILLed mid-load: its port refuses at once")
    wait_for(lambda: haproxy.status(victim.name) == "DOWN", f"haproxy marks {victim.name} DOWN", 5)
    time.sleep(1)  # load on two replicas
    victim.start()
    wait_for(lambda: haproxy.status(victim.name) == "UP", f"haproxy marks the restarted {victim.name} UP")
    load.continued.set()
    for thread in threads:
        thread.join(timeout=max(1, DEADLINE - time.monotonic()))
    check(not any(t.is_alive() for t in threads), "every client finished in time")
    served_after_restart = victim.served("/upload") + victim.served("/download")
    check(served_after_restart > 0, f"the restarted {victim.name} served {served_after_restart} transfers")
    unclean = [f for f in load.failures if not clean_failure(f)]
    check(not unclean, f"{len(load.failures)} operations failed, all cleanly: {load.failures[:5]} {unclean[:5]}")
    check(len(load.uploaded) >= CLIENTS * OPERATIONS_PER_CLIENT // 3, f"{len(load.uploaded)} uploads answered 200")
    for replica in replicas:
        direct = Load(replica.url, headers, load.recipients)
        direct.uploaded = load.uploaded
        for name in load.uploaded:
            direct.download(name)
        check(not direct.failures, f"every 200 upload downloads byte for byte from {replica.name}: {direct.failures[:3]}")


def drain(leaving: Replica, staying: list[Replica], haproxy: Haproxy, headers: dict[str, str], recipients: str) -> None:
    data = random.randbytes(3 << 20)
    name = f"drain-{uuid.uuid4().hex[:8]}.bin"
    head, tail, content_type = multipart(recipients, data)
    sent_some, go_on = threading.Event(), threading.Event()

    def slowly():
        yield head + data[: 1 << 20]
        sent_some.set()
        go_on.wait(timeout=30)
        for at in range(1 << 20, len(data), 256 << 10):
            yield data[at : at + (256 << 10)]
        yield tail

    answer: dict[str, object] = {}

    def upload():
        try:
            answer["response"] = requests.post(
                f"{leaving.url}/upload/{CONTAINER}/{name}",
                data=slowly(),
                headers={**headers, "content-type": content_type},
                timeout=TIMEOUT,
            )
        except requests.RequestException as error:
            answer["error"] = error

    thread = threading.Thread(target=upload)
    thread.start()
    check(sent_some.wait(timeout=TIMEOUT), "a slow upload is under way to r1")
    # The client has handed over its first MiB; SIGTERM must wait until r1 has the request too,
    # or r1 finds nothing in flight and stops at once.
    wait_for(lambda: leaving.in_flight() >= 2, "a slow upload is in flight on r1", TIMEOUT)
    leaving.process.send_signal(signal.SIGTERM)
    wait_for(lambda: requests.get(f"{leaving.url}/readyz", timeout=2).status_code == 503, "r1's /readyz 503", 2)
    body = requests.get(f"{leaving.url}/readyz", timeout=2).json()
    check(body["status"] == "draining", f"SIGTERM turns r1's /readyz not-ready at once: {body}")
    wait_for(lambda: haproxy.status(leaving.name) == "DOWN", "haproxy takes r1 out", 5)
    ok = all(
        requests.get(f"{haproxy.url}/key/public", headers=headers, timeout=TIMEOUT).status_code == 200
        for _ in range(6)
    )
    check(ok, "haproxy took the draining r1 out; requests through it still succeed")
    go_on.set()
    thread.join(timeout=TIMEOUT)
    response = answer.get("response")
    check(
        response is not None and response.status_code == 200,
        f"the upload in flight on r1 finished with 200 after SIGTERM: {answer}",
    )
    check(leaving.process.wait(timeout=TIMEOUT) == 0, "r1 exited 0 once its transfer was done")
    key = response.json()["decryption_keys"]["me"]
    for replica in staying:
        got = requests.get(
            f"{replica.url}/download/{CONTAINER}/{name}", headers={**headers, "x-blob-key": key}, timeout=TIMEOUT
        )
        check(got.status_code == 200 and got.content == data, f"that upload downloads byte for byte from {replica.name}")


if __name__ == "__main__":
    main()
