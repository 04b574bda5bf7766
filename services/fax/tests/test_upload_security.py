"""The HTTP upload over a real aiohttp server: a timestamp must be finite, in range and fresh, and
the credential fixes the tenant (a secret per tenant; the body cannot pick another)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pydantic
import pytest

from switchboard.fax.entrypoints.http_upload import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HttpServer,
    UploadEndpoint,
    sign,
)
from switchboard.fax.settings import FaxSettings
from switchboard.v1 import fax_pb2

SECRETS = {"demo": "demo-upload-secret", "acme": "acme-upload-secret"}


class Taken:
    """The intake's side of an upload: what it was handed (a fake of `Accept`)."""

    def __init__(self) -> None:
        self.faxes: list[tuple[str, str, bytes, fax_pb2.FaxOrigin]] = []

    async def __call__(
        self, tenant: str, fax_id: str, data: bytes, origin: fax_pb2.FaxOrigin
    ) -> object:
        self.faxes.append((tenant, fax_id, data, origin))
        return None


@pytest.fixture
async def upload() -> AsyncIterator[tuple[str, Taken]]:
    taken = Taken()
    endpoint = UploadEndpoint(taken, SECRETS, 1024 * 1024, frozenset({"demo", "acme"}))
    server = HttpServer(endpoint.app(), "127.0.0.1", 0)
    port = await server.start()
    try:
        yield f"http://127.0.0.1:{port}/fax", taken
    finally:
        await server.stop()


def _form(tenant: str | None = None) -> tuple[bytes, str]:
    boundary = "sbboundary"
    parts = []
    if tenant is not None:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="tenant"\r\n\r\n{tenant}\r\n'
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4 test\r\n"
    )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


async def _post(
    url: str, secret: str, stamp: str | None = None, tenant: str | None = None
) -> tuple[int, dict[str, Any]]:
    body, content_type = _form(tenant)
    stamp = stamp if stamp is not None else str(int(time.time()))
    headers = {
        "Content-Type": content_type,
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: sign(secret, stamp, body),
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=body, headers=headers) as response:
            return response.status, await response.json()


@pytest.mark.parametrize(
    ("stamp", "error"),
    [
        ("nan", "X-Fax-Timestamp must be a finite number of unix seconds, got 'nan'"),
        ("NaN", "X-Fax-Timestamp must be a finite number of unix seconds, got 'NaN'"),
        ("inf", "X-Fax-Timestamp must be a finite number of unix seconds, got 'inf'"),
        ("-infinity", "X-Fax-Timestamp must be a finite number of unix seconds, got '-infinity'"),
        ("-5", "X-Fax-Timestamp -5 is out of range (0 to 253402300799 unix seconds)"),
        ("1e300", "X-Fax-Timestamp 1e300 is out of range (0 to 253402300799 unix seconds)"),
        ("soon", "X-Fax-Timestamp must be unix seconds, got 'soon'"),
    ],
)
async def test_a_timestamp_that_is_not_finite_or_out_of_range_is_a_precise_400(
    upload: tuple[str, Taken], stamp: str, error: str
) -> None:
    url, taken = upload
    status, answer = await _post(url, SECRETS["demo"], stamp)
    assert (status, answer["error"]) == (400, error)
    assert taken.faxes == []


async def test_a_stale_or_far_future_timestamp_is_refused(upload: tuple[str, Taken]) -> None:
    url, taken = upload
    for stamp in (str(int(time.time()) - 3600), str(int(time.time()) + 86400 * 365)):
        status, answer = await _post(url, SECRETS["demo"], stamp)
        assert status == 401 and "away from now" in answer["error"], answer
    assert taken.faxes == []


async def test_the_credential_fixes_the_tenant(upload: tuple[str, Taken]) -> None:
    url, taken = upload
    # Each tenant's secret uploads for that tenant, with or without naming it.
    status, _ = await _post(url, SECRETS["acme"])
    assert status == 202
    status, _ = await _post(url, SECRETS["demo"], tenant="demo")
    assert status == 202
    assert [t for t, *_ in taken.faxes] == ["acme", "demo"]
    # One tenant's secret cannot pick another tenant.
    status, answer = await _post(url, SECRETS["demo"], tenant="acme")
    assert status == 403
    assert answer["error"] == "this upload is signed with tenant demo's secret, not tenant acme's"
    # An unknown secret is refused.
    status, answer = await _post(url, "a-guess")
    assert status == 403 and "does not match" in answer["error"]
    assert len(taken.faxes) == 2


def test_the_upload_secrets_are_per_tenant_and_the_single_secret_is_fax_tenants() -> None:
    s = FaxSettings(FAX_WEBHOOK_SECRETS="demo=one, acme=two", FAX_TENANT="demo")
    assert s.upload_secrets == {"demo": "one", "acme": "two"}
    # The older single secret is FAX_TENANT's only.
    assert FaxSettings(FAX_WEBHOOK_SECRET="s", FAX_TENANT="acme").upload_secrets == {"acme": "s"}
    assert FaxSettings().upload_secrets == {}
    for bad, error in (
        ("demo", "FAX_WEBHOOK_SECRETS: 'demo' is not tenant=secret"),
        ("Demo X=s", "FAX_WEBHOOK_SECRETS: 'Demo X' is not a tenant name"),
        ("demo=s,acme=s", "FAX_WEBHOOK_SECRETS: acme and demo share a secret"),
        ("demo=a,demo=b", "FAX_WEBHOOK_SECRETS: demo appears twice"),
    ):
        with pytest.raises(pydantic.ValidationError) as refused:
            FaxSettings(FAX_WEBHOOK_SECRETS=bad)
        assert error in str(refused.value)
    with pytest.raises(pydantic.ValidationError) as refused:
        FaxSettings(FAX_WEBHOOK_SECRETS="demo=a", FAX_WEBHOOK_SECRET="b", FAX_TENANT="demo")
    assert "FAX_WEBHOOK_SECRET and FAX_WEBHOOK_SECRETS both give demo's secret" in str(
        refused.value
    )
