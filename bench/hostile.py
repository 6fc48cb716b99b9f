"""Hostile clients for bench/hostile.sh: trickling bodies and endless multipart part headers.

  hostile.py trickle BASE HEADERS_JSON CONTAINER   seconds until each trickling client is cut off
  hostile.py headers BASE HEADERS_JSON CONTAINER N  N clients sending endless part headers at once

HEADERS_JSON is a JSON object of the three credential headers. Prints one line per client.
"""

import json
import socket
import sys
import threading
import time
from urllib.parse import urlparse

TRICKLE_PAUSE = 4.0  # seconds between bytes, well within the idle timeout
GIVE_UP = 150.0  # a client still held after this long counts as never cut off


def connect(base):
    url = urlparse(base)
    return socket.create_connection((url.hostname, url.port))


def head(method, path, headers, content_type, length):
    lines = [f"{method} {path} HTTP/1.1", "Host: bench"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Type: {content_type}", f"Content-Length: {length}", "", ""]
    return "\r\n".join(lines).encode()


def answer_status(sock, timeout):
    """The status code the server answered within timeout, or None (no answer yet)."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        return None
    except OSError:
        return "closed"
    return data[9:12].decode() if data else "closed"


def trickle(base, headers, method, path, content_type, body, declared, results, label):
    sock = connect(base)
    sock.sendall(head(method, path, headers, content_type, declared))
    start = time.monotonic()
    status = None
    for byte in body:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            status = "closed"
            break
        status = answer_status(sock, TRICKLE_PAUSE)
        if status or time.monotonic() - start > GIVE_UP:
            break
    elapsed = time.monotonic() - start
    results.append(f"{label}: {'answered ' + status if status else 'still held'} after {elapsed:.1f} s")
    sock.close()


def endless_headers(base, headers, path, results):
    sock = connect(base)
    start = time.monotonic()
    sock.sendall(head("POST", path, headers, "multipart/form-data; boundary=B", 10**9) + b"--B\r\nX-Endless: ")
    status, sent = None, 0
    chunk = b"x" * (1 << 20)
    while sent < 20 and not status:
        sock.settimeout(None)  # answer_status leaves a short timeout behind
        try:
            sock.sendall(chunk)
        except OSError:
            status = "closed"
            break
        sent += 1
        status = answer_status(sock, 0.01)
    status = status or answer_status(sock, 30) or "no answer in 30 s"
    results.append(f"answered {status} after {sent} MiB of part headers in {time.monotonic() - start:.1f} s")
    sock.close()


def main():
    mode, base, headers, container = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    results, threads = [], []
    if mode == "trickle":
        form = b"decryption-key=" + b"A" * 400
        part = b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n" + b"x" * 400
        cases = [
            ("download form body", "GET", f"/download/{container}/absent",
             "application/x-www-form-urlencoded", form, len(form)),
            ("upload body", "POST", f"/upload/{container}/slow.bin",
             "multipart/form-data; boundary=B", part, 10**6),
        ]
        for label, method, path, content_type, body, declared in cases:
            args = (base, headers, method, path, content_type, body, declared, results, label)
            threads.append(threading.Thread(target=trickle, args=args))
    else:
        for _ in range(int(sys.argv[5])):
            threads.append(threading.Thread(target=endless_headers, args=(base, headers, f"/upload/{container}/h.bin", results)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for line in sorted(results):
        print(line)


if __name__ == "__main__":
    main()
