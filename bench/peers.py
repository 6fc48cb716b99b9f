#!/usr/bin/env python3
"""Small-file phase of bench/peers.sh: COUNT uploads of SIZE bytes, then COUNT downloads of the
same files, by CLIENTS keep-alive clients (aiohttp), against blobprox or a plain WebDAV server
(nginx, `rclone serve webdav`). Normally run through bench/peers.sh; see bench/README.md.

    peers.py --kind blobprox --url http://127.0.0.1:PORT --container bench --salt S \
        --decryption-key D --comparison-key C [--count 2000] [--size 65536] [--clients 16]
    peers.py --kind webdav --url http://127.0.0.1:PORT [--count 2000] ...

Uploads must answer 200 (blobprox, with a wrapped key) or 201/204 (WebDAV PUT); every download
must answer 200 with a body whose sha256 is the uploaded file's. Prints one line of JSON:
{"upload_rps": ..., "download_rps": ..., "errors": ...}; exits 1 when there was an error.
"""

import asyncio
import hashlib
import json
import random
import sys
import time

import aiohttp

from bench_client import argument_parser, credential_headers, recipients_for, run_on_loopback, upload_form


class Failure(Exception):
    pass


class Blobprox:
    """Uploads as multipart forms, downloads with the wrapped key in x-blob-key."""

    def __init__(self, args, session):
        self.args = args
        self.session = session
        self.recipients = None

    async def prepare(self):
        self.recipients = await recipients_for(self.session, self.args.url, "bench")

    async def put(self, name, payload):
        form = upload_form(self.recipients, payload)
        async with self.session.post(f"{self.args.url}/upload/{self.args.container}/{name}", data=form) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise Failure(f"upload: HTTP {answer.status}: {body[:200]!r}")
            return json.loads(body)["decryption_keys"]["bench"]

    def get(self, name, wrapped):
        return self.session.get(
            f"{self.args.url}/download/{self.args.container}/{name}", headers={"x-blob-key": wrapped}
        )


class WebDav:
    """Plain PUT and GET."""

    def __init__(self, args, session):
        self.args = args
        self.session = session

    async def prepare(self):
        pass

    async def put(self, name, payload):
        async with self.session.put(f"{self.args.url}/{name}", data=payload) as answer:
            await answer.read()
            if answer.status not in (200, 201, 204):
                raise Failure(f"upload: HTTP {answer.status}")
            return None

    def get(self, name, _wrapped):
        return self.session.get(f"{self.args.url}/{name}")


async def phase(args, work):
    """Runs work(i) for every i in range(count) on `clients` workers; requests per second."""
    queue = iter(range(args.count))

    async def worker():
        for i in queue:
            await work(i)

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.clients)))
    return args.count / (time.monotonic() - start)


async def run(args):
    headers = {}
    if args.kind == "blobprox":
        headers = credential_headers(args)
    rng = random.Random(args.seed)
    payloads = [rng.randbytes(args.size) for _ in range(16)]
    digests = [hashlib.sha256(p).digest() for p in payloads]
    wrapped = [None] * args.count
    errors = []
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        peer = (Blobprox if args.kind == "blobprox" else WebDav)(args, session)
        await peer.prepare()

        async def upload(i):
            try:
                wrapped[i] = await peer.put(f"{args.prefix}{i}", payloads[i % len(payloads)])
            except (Failure, aiohttp.ClientError, asyncio.TimeoutError, OSError, KeyError, ValueError) as error:
                errors.append(f"upload {i}: {error!r}")

        async def download(i):
            try:
                async with peer.get(f"{args.prefix}{i}", wrapped[i]) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise Failure(f"HTTP {answer.status}")
                    if hashlib.sha256(body).digest() != digests[i % len(digests)]:
                        raise Failure(f"wrong content ({len(body)} bytes)")
            except (Failure, aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                errors.append(f"download {i}: {error!r}")

        upload_rps = await phase(args, upload)
        download_rps = await phase(args, download)
    print(json.dumps({"upload_rps": round(upload_rps, 1), "download_rps": round(download_rps, 1), "errors": len(errors)}))
    for error in errors[:5]:
        print(f"peers.py: {error}", file=sys.stderr)
    return 1 if errors else 0


def main():
    parser = argument_parser(__doc__, container="bench", credentials_required=False)
    parser.add_argument("--kind", choices=("blobprox", "webdav"), required=True)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--prefix", default="small-")
    parser.add_argument("--request-timeout", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.count < 1 or args.size < 1 or args.clients < 1:
        parser.error("--count, --size and --clients must be positive")
    if args.kind == "blobprox" and not (args.salt and args.decryption_key and args.comparison_key):
        parser.error("--kind blobprox needs --salt, --decryption-key and --comparison-key")
    run_on_loopback(parser, args, run)


if __name__ == "__main__":
    main()
