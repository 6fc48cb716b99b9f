"""What bench/load.py and bench/peers.py share: the arguments that reach a blobprox on the
loopback, its credential headers, and an upload's form for one recipient (aiohttp)."""

import argparse
import asyncio
import json
import sys

import aiohttp


def argument_parser(doc, container, credentials_required):
    """A parser with --url, --container and the three credentials (required or not)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--container", default=container)
    for option in ("--salt", "--decryption-key", "--comparison-key"):
        parser.add_argument(option, required=credentials_required)
    return parser


def credential_headers(args):
    """The three credential headers of every request to blobprox."""
    return {"x-salt": args.salt, "x-decryption-key": args.decryption_key, "x-comparison-key": args.comparison_key}


async def recipients_for(session, url, recipient):
    """The `public-keys` field of an upload: {recipient: the proxy's own public key}."""
    async with session.get(f"{url}/key/public") as answer:
        if answer.status != 200:
            raise SystemExit(f"GET /key/public answered {answer.status}")
        return json.dumps({recipient: (await answer.json())["public_key"]})


def upload_form(recipients, payload):
    """The multipart form of an upload that may overwrite."""
    form = aiohttp.FormData()
    form.add_field("public-keys", recipients)
    form.add_field("overwrite", "true")
    form.add_field("file", payload, filename="data.bin", content_type="application/octet-stream")
    return form


def run_on_loopback(parser, args, run):
    """Exits with what `run(args)` returns, after refusing a server that is not on the loopback."""
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("only a server on the loopback is a target")
    sys.exit(asyncio.run(run(args)))
