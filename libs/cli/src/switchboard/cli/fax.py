"""`switchboard fax upload FILE`: hand a received fax (PDF or TIFF) to the fax service's HTTP
upload, signed as a fax provider signs its webhook (X-Fax-Timestamp, X-Fax-Signature: an
HMAC-SHA256 of "<timestamp>." and the body with the tenant's upload secret; docs/fax.md).

The secret is --secret, else SWITCHBOARD_FAX_UPLOAD_SECRET, else the one `switchboard run` made
(.run/fax-upload-secret); the URL is --url, else the one `switchboard run` started."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import mimetypes
import os
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp

from switchboard.cli.endpoints import Endpoints, fax_upload_secret

UPLOAD_LISTENER = "Fax upload (HTTP POST /fax)"
SECRET_ENV = "SWITCHBOARD_FAX_UPLOAD_SECRET"


def add_parser(sub: Any) -> None:
    f = sub.add_parser("fax", help="the fax channel: upload a received fax")
    fax_sub = f.add_subparsers(dest="fax_command", required=True)
    u = fax_sub.add_parser("upload", help="upload a PDF or TIFF as a received fax (signed)")
    u.add_argument("file", type=Path)
    u.add_argument("--from", dest="sender", default="", help="the sender's fax number")
    u.add_argument("--to", dest="destination", default="", help="the number it was sent to")
    u.add_argument("--tenant", default=None, help="(default: the secret's tenant)")
    u.add_argument("--url", default="", help="the upload's base URL (default: the running one)")
    u.add_argument("--secret", default="", help=f"the upload secret (default: ${SECRET_ENV})")


def form(fields: dict[str, str], name: str, content_type: str, data: bytes) -> tuple[str, bytes]:
    """A multipart/form-data body: `fields` and the file part; its content type and bytes."""
    boundary = "switchboard-" + secrets.token_hex(12)
    out = bytearray()
    for key, value in fields.items():
        if value:
            out += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            out += value.encode() + b"\r\n"
    out += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def run(directory: Path, args: argparse.Namespace) -> int:
    ep = Endpoints.load(directory)
    url = (args.url or ep.listeners.get(UPLOAD_LISTENER, "")).rstrip("/")
    if not url:
        print("switchboard fax upload: no upload URL (start `switchboard run`, or give --url)")
        return 2
    secret = args.secret or os.environ.get(SECRET_ENV, "") or fax_upload_secret(directory)
    if not secret:
        print(f"switchboard fax upload: no upload secret (--secret or ${SECRET_ENV})")
        return 2
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"switchboard fax upload: {exc}")
        return 2
    content_type = mimetypes.guess_type(args.file.name)[0] or "application/octet-stream"
    fields = {"from": args.sender, "to": args.destination, "tenant": args.tenant or ""}
    body_type, body = form(fields, args.file.name, content_type, data)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": body_type,
        "X-Fax-Timestamp": timestamp,
        "X-Fax-Signature": signature(secret, timestamp, body),
    }
    context = ssl.create_default_context(cafile=ep.tls["ca_file"]) if ep.tls else None
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/fax", data=body, headers=headers, ssl=context or True) as resp,
    ):
        text = await resp.text()
    print(f"{resp.status} {text.strip()}")
    return 0 if resp.status == 202 else 1
