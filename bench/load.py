#!/usr/bin/env python3
"""Mixed-load test of a running blobprox: CLIENTS concurrent clients, each doing back-to-back
uploads and downloads of SIZE bytes (half and half, at random) for DURATION seconds. Normally run
through bench/load.sh, which starts a fresh server; see bench/README.md.

    load.py --url http://127.0.0.1:PORT --container load --salt S --decryption-key D \
        --comparison-key C [--clients 32] [--duration 60] [--size 1048576] [--server-pid PID]

Every answer is checked: uploads must be 200 with a wrapped key for the recipient, downloads 200
with exactly the uploaded bytes. Anything else (another status, a short or different body, an
exception, a timeout) is an error. Prints a markdown report; exits 1 when there were errors.
"""

import asyncio
import json
import math
import os
import random
import threading
import time
from collections import Counter

import aiohttp

from bench_client import argument_parser, credential_headers, recipients_for, run_on_loopback, upload_form

HZ = os.sysconf("SC_CLK_TCK")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def proc_ticks(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


class RssSampler(threading.Thread):
    """VmRSS of the server once a second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []  # (seconds since start, kB)
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic() - self.start_time, proc_status(self.pid)["VmRSS"]))
            except OSError:
                return
            self.stop.wait(1.0)


class Stats:
    def __init__(self):
        self.latency = {"upload": [], "download": []}
        self.bytes = Counter()
        self.errors = Counter()
        self.examples = []

    def error(self, op, kind, detail):
        self.errors[f"{op}: {kind}"] += 1
        if len(self.examples) < 10:
            self.examples.append(f"{op}: {kind}: {detail}")


async def upload(session, args, name, payload, recipients):
    form = upload_form(recipients, payload)
    async with session.post(f"{args.url}/upload/{args.container}/{name}", data=form) as answer:
        body = await answer.read()
        if answer.status != 200:
            raise Failure(f"HTTP {answer.status}", body[:200])
        try:
            return json.loads(body)["decryption_keys"]["load"]
        except (ValueError, KeyError) as error:
            raise Failure("bad answer", f"{error!r}: {body[:200]!r}") from None


async def download(session, args, name, wrapped, expected):
    headers = {"x-blob-key": wrapped}
    async with session.get(f"{args.url}/download/{args.container}/{name}", headers=headers) as answer:
        body = await answer.read()
        if answer.status != 200:
            raise Failure(f"HTTP {answer.status}", body[:200])
        if len(body) != len(expected):
            raise Failure("wrong length", f"{len(body)} bytes, want {len(expected)}")
        if body != expected:
            raise Failure("wrong content", "differs from the upload")


class Failure(Exception):
    def __init__(self, kind, detail):
        super().__init__(kind)
        self.kind = kind
        self.detail = detail


async def client(number, session, args, payloads, recipients, pool, stats, deadline, rng):
    """One client: upload or download, one after another, until the deadline."""
    serial = 0
    while time.monotonic() < deadline:
        if rng.random() < args.upload_fraction:
            op = "upload"
            name = f"c{number:02d}/u{serial % args.names_per_client}"
            payload = payloads[rng.randrange(len(payloads))]
            serial += 1
        else:
            op = "download"
            name, wrapped, payload = pool[rng.randrange(len(pool))]
        start = time.monotonic()
        try:
            if op == "upload":
                await upload(session, args, name, payload, recipients)
            else:
                await download(session, args, name, wrapped, payload)
        except Failure as failure:
            stats.error(op, failure.kind, failure.detail)
            continue
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            stats.error(op, type(error).__name__, str(error)[:200])
            await asyncio.sleep(0.05)  # do not spin against a server that is gone
            continue
        stats.latency[op].append(time.monotonic() - start)
        stats.bytes[op] += len(payload)


async def run(args):
    headers = credential_headers(args)
    rng = random.Random(args.seed)
    payloads = [rng.randbytes(args.size) for _ in range(4)]
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=args.clients)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        recipients = await recipients_for(session, args.url, "load")
        # The blobs that downloads read: one per client, made before the clock starts.
        pool = []
        for i in range(args.clients):
            name = f"pool/{i:02d}"
            payload = payloads[i % len(payloads)]
            wrapped = await upload(session, args, name, payload, recipients)
            await download(session, args, name, wrapped, payload)
            pool.append((name, wrapped, payload))

        stats = Stats()
        sampler = RssSampler(args.server_pid) if args.server_pid else None
        server_ticks0 = proc_ticks(args.server_pid) if args.server_pid else None
        own0 = os.times()
        start = time.monotonic()
        deadline = start + args.duration
        if sampler:
            sampler.start()
        await asyncio.gather(
            *(
                client(i, session, args, payloads, recipients, pool, stats, deadline, random.Random(args.seed + 1 + i))
                for i in range(args.clients)
            )
        )
        elapsed = time.monotonic() - start
        own1 = os.times()
        server_cpu = None
        if args.server_pid:
            server_cpu = (proc_ticks(args.server_pid) - server_ticks0) / HZ / elapsed * 100
        if sampler:
            sampler.stop.set()
            sampler.join()
    client_cpu = (own1.user + own1.system - own0.user - own0.system) / elapsed * 100
    report(args, stats, elapsed, sampler, server_cpu, client_cpu)
    return 1 if stats.errors else 0


def report(args, stats, elapsed, sampler, server_cpu, client_cpu):
    ops = {op: len(v) for op, v in stats.latency.items()}
    errors = sum(stats.errors.values())
    print()
    print(
        f"{args.clients} clients, {args.duration:g} s (measured {elapsed:.1f} s), {args.size} bytes per transfer, "
        f"uploads {args.upload_fraction:.0%} / downloads {1 - args.upload_fraction:.0%}, overwrite=true, "
        f"{args.names_per_client} blob names per client for uploads, {args.clients} pre-uploaded blobs for downloads"
    )
    print()
    print("| operation | completed | MB/s | ops/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for op in ("upload", "download"):
        lat = sorted(x * 1000 for x in stats.latency[op])
        op_errors = sum(v for k, v in stats.errors.items() if k.startswith(op + ":"))
        print(
            f"| {op} | {ops[op]} | {stats.bytes[op] / 1e6 / elapsed:.1f} | {ops[op] / elapsed:.1f} | "
            f"{percentile(lat, 50):.1f} | {percentile(lat, 90):.1f} | {percentile(lat, 99):.1f} | "
            f"{(lat[-1] if lat else float('nan')):.1f} | {op_errors} |"
        )
    total = ops["upload"] + ops["download"]
    both = (stats.bytes["upload"] + stats.bytes["download"]) / 1e6 / elapsed
    print(f"| total | {total} | {both:.1f} | {total / elapsed:.1f} | | | | | {errors} |")
    print()
    if server_cpu is not None:
        print(f"CPU, % of one core (200 = both cores): blobprox {server_cpu:.0f}, this load generator {client_cpu:.0f}")
    if sampler and sampler.samples:
        status = proc_status(args.server_pid)
        rss = sampler.samples
        marks = sorted({min(len(rss) - 1, i * len(rss) // 10) for i in range(11)})
        timeline = ", ".join(f"{rss[i][0]:.0f} s: {rss[i][1] / 1024:.1f}" for i in marks)
        print(
            f"blobprox RSS (MiB): {timeline}; highest sample {max(r[1] for r in rss) / 1024:.1f}; "
            f"VmHWM (peak since the server started) {status['VmHWM'] / 1024:.1f}"
        )
    if errors:
        print()
        print("errors: " + ", ".join(f"{k} x{v}" for k, v in stats.errors.most_common()))
        for example in stats.examples:
            print(f"  e.g. {example}")
    else:
        print("errors: 0 (every upload answered 200 with a wrapped key; every download 200 with the exact bytes)")


def main():
    parser = argument_parser(__doc__, container="load", credentials_required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--upload-fraction", type=float, default=0.5)
    parser.add_argument("--names-per-client", type=int, default=4)
    parser.add_argument("--request-timeout", type=float, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    if not 0 < args.duration <= 3600:
        parser.error("--duration must be in (0, 3600] seconds")
    if args.clients < 1 or args.size < 1:
        parser.error("--clients and --size must be positive")
    run_on_loopback(parser, args, run)


if __name__ == "__main__":
    main()
