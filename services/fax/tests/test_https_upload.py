"""The fax upload over HTTPS: with FAX_TLS_CERT_FILE and FAX_TLS_KEY_FILE a provider's signed
upload is taken over TLS, and plain HTTP is refused."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import aiohttp
import pytest

from switchboard.fax import samples
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.entrypoints.http_upload import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from switchboard.fax.settings import FaxSettings
from switchboard.testing.tls import self_signed

WEBHOOK_SECRET = "provider-shared-secret"


def signed_form(data: bytes) -> tuple[bytes, dict[str, str]]:
    body = (
        b'--B\r\nContent-Disposition: form-data; name="fax_id"\r\n\r\nprov-tls\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="in.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n" + data + b"\r\n--B--\r\n"
    )
    stamp = str(int(time.time()))
    return body, {
        "Content-Type": "multipart/form-data; boundary=B",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(WEBHOOK_SECRET, stamp, body),
    }


async def test_a_signed_upload_over_https(nats_url: str, tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    app = FaxApp(
        FaxSettings(
            NATS_URL=nats_url,
            FAX_GRPC_PORT=0,
            FAX_HTTP_PORT=0,
            FAX_WEBHOOK_SECRET=WEBHOOK_SECRET,
            FAX_TLS_CERT_FILE=str(cert),
            FAX_TLS_KEY_FILE=str(key),
            SHUTDOWN_GRACE_SECONDS=1.0,
        )
    )
    await app.start()
    try:
        body, headers = signed_form(samples.encrypted_pdf())
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            url = f"https://127.0.0.1:{app.http_port}/fax"
            async with http.post(url, data=body, headers=headers) as response:
                assert response.status == 202, await response.text()
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                url = f"http://127.0.0.1:{app.http_port}/fax"
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
    finally:
        await app.stop()
