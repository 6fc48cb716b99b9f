#!/usr/bin/env python3
"""A bounded flood of GET requests from many loopback source addresses (used by auth.sh).

    flood.py --url http://127.0.0.1:PORT/key/public --duration 20 --connections 64 \
        --sources 127.0.1.1-127.0.1.64 [--header "name: value" ...]

Each connection is bound to one source address (round-robin over --sources, which must be on
the loopback range 127.0.0.0/8) and sends requests one after another over keep-alive; a closed
connection is reopened. Stops after --duration seconds and prints one JSON object: the count of
answers per status, connection errors, and requests/s.
"""

import argparse
import asyncio
import ipaddress
import json
import sys
import time
import urllib.parse
from collections import Counter


def parse_sources(text):
    first, _, last = text.partition("-")
    first = ipaddress.IPv4Address(first)
    last = ipaddress.IPv4Address(last or first)
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    if first not in loopback or last not in loopback or last < first:
        raise SystemExit(f"--sources must be a range inside 127.0.0.0/8, not {text}")
    return [str(ipaddress.IPv4Address(n)) for n in range(int(first), int(last) + 1)]


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and "close" in value.lower():
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def worker(host, port, request, source, deadline, counts):
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            while time.monotonic() < deadline:
                writer.write(request)
                status, close = await read_response(reader)
                counts[status] += 1
                if close:
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
            counts[f"error: {type(error).__name__}"] += 1
            await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sources", required=True)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        raise SystemExit("--duration must be in (0, 600] seconds")
    url = urllib.parse.urlsplit(args.url)
    if url.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("only a server on 127.0.0.1 is a target")
    sources = parse_sources(args.sources)
    path = url.path + (f"?{url.query}" if url.query else "")
    request = f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
    for header in args.header:
        request += header.strip() + "\r\n"
    request = (request + "\r\n").encode()
    counts = Counter()
    start = time.monotonic()
    deadline = start + args.duration
    await asyncio.gather(
        *(
            worker(url.hostname, url.port, request, sources[i % len(sources)], deadline, counts)
            for i in range(args.connections)
        )
    )
    elapsed = time.monotonic() - start
    answers = sum(v for k, v in counts.items() if isinstance(k, int))
    json.dump(
        {
            "statuses": {str(k): v for k, v in sorted(counts.items(), key=str) if isinstance(k, int)},
            "errors": {k: v for k, v in counts.items() if not isinstance(k, int)},
            "answers": answers,
            "seconds": round(elapsed, 2),
            "requests_per_second": round(answers / elapsed, 1),
            "source_addresses": len(sources),
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    asyncio.run(main())
