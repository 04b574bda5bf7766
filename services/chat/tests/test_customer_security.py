"""Connection refusals with reasons, origins, throttling, uploads and XSS payloads, over a real
uvicorn, real Socket.IO clients and a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import nats.errors
import pytest
import socketio

from switchboard.chat.domain import visitor_token
from switchboard.v1.events_pb2 import OutboundEmail

SECRET = "chat-test-secret"
TENANT = "demo"
ALLOWED_ORIGIN = "https://shop.example.com"
OTHER_TENANTS_ORIGIN = "https://acme-shop.example.com"  # conftest: allowed for acme only


async def test_bad_visitor_tokens_are_refused_with_the_reason(connect: Any) -> None:
    good = (await connect.visitor_token())["token"]
    forged = visitor_token.mint("another-secret", TENANT, "v1", 600)
    expired = visitor_token.mint(SECRET, TENANT, "v1", -10)
    tampered = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    cases = {
        "not-a-token": "visitor token: malformed",
        forged: "visitor token: signature does not match",
        expired: "visitor token: expired",
        tampered: "visitor token: signature does not match",
    }
    for token, reason in cases.items():
        refused = await connect.refused("/customer", {"token": token, "language": "ko"})
        assert refused.startswith(reason), (token, refused)
    # An agent access token is not a visitor token either.
    agent = connect.token()
    assert "malformed" in await connect.refused("/customer", {"token": agent, "language": "ko"})


async def test_a_disallowed_origin_is_refused_with_the_reason(connect: Any) -> None:
    token = (await connect.visitor_token())["token"]
    auth = {"token": token, "language": "ko"}
    # An origin no tenant allows does not get past Socket.IO's handshake (no CORS for it).
    with pytest.raises(socketio.exceptions.ConnectionError):
        await connect.raw("/customer", auth, headers={"Origin": "https://evil.example"})
    # Another tenant's origin gets past the handshake, and is refused for this tenant, with why.
    reason = await connect.refused("/customer", auth, headers={"Origin": OTHER_TENANTS_ORIGIN})
    assert reason == f"origin {OTHER_TENANTS_ORIGIN} is not allowed for tenant demo"
    # The chat's own origin and the tenant's configured origin are let in.
    own = await connect.raw("/customer", auth, headers={"Origin": connect.url})
    assert (await own.next("session"))["contact_id"] is None
    allowed = await connect.raw("/customer", auth, headers={"Origin": ALLOWED_ORIGIN})
    await allowed.next("session")
    # The agent namespace holds to the same rule.
    agent_auth = {"token": connect.token()}
    reason = await connect.refused("/agent", agent_auth, headers={"Origin": OTHER_TENANTS_ORIGIN})
    assert reason == f"origin {OTHER_TENANTS_ORIGIN} is not allowed for tenant demo"
    # And so does the token endpoint.
    denied = await connect.visitor_token(origin="https://evil.example")
    assert denied["status"] == 403
    assert denied["error"] == "origin https://evil.example is not allowed for tenant demo"


async def test_a_flood_is_throttled_and_other_sockets_are_unaffected(replicas: Any) -> None:
    _, connect = await replicas.start(message_burst=5, messages_per_second=0.2)
    if True:
        flooder, _, first = await connect.conversation()
        calm, _, _ = await connect.conversation()
        loop = asyncio.get_running_loop()
        started = loop.time()
        acks = [await flooder.call("message", {"text": f"spam {i}"}) for i in range(30)]
        elapsed = loop.time() - started
        ok = [a for a in acks if a["ok"]]
        refused = [a for a in acks if not a["ok"]]
        # The burst (less the first message) plus what the rate refilled meanwhile.
        assert len(ok) <= 4 + int(elapsed * 0.2) + 1
        assert refused and refused[0]["error"].startswith("too many messages: slow down")
        error = await flooder.next("error")
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        # The other socket's messages go through and come back.
        ack = await calm.call("message", {"text": "제 주문은 어디 있나요?"})
        assert ack["ok"], ack
        await calm.next("message", lambda m: m["message_id"] == ack["message_id"])
        assert first["ok"]


async def test_messages_over_the_size_limit_are_refused(connect: Any) -> None:
    customer, _, _ = await connect.conversation()
    ack = await customer.call("message", {"text": "가" * 1400})
    assert ack == {"ok": False, "error": "message too large: 4200 bytes, limit 4000"}


XSS = '<img src=x onerror="alert(1)"><script>alert("x")</script>'


async def test_script_in_a_message_is_stored_and_echoed_as_text(connect: Any) -> None:
    customer, _, _first = await connect.conversation(text=XSS, name='<b onmouseover="x()">')
    echoed = await customer.next("message")
    assert echoed["text"] == XSS  # exactly as typed: the widget renders it with textContent
    again = await connect.customer(token=customer.token)
    resumed = await again.next("session")
    assert [m["text"] for m in resumed["messages"]] == [XSS]
    # The page's CSP forbids inline script anyway.
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{connect.url}/") as r:
            assert "script-src 'self'" in r.headers["content-security-policy"]


async def _upload(
    connect: Any, token: str, body: bytes, content_type: str, filename: str
) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{connect.url}/api/upload",
            params={"filename": filename},
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        ) as r:
            return r.status, await r.json()


async def test_uploads_have_limits_and_are_served_with_safe_types(connect: Any) -> None:
    customer, _, _first = await connect.conversation()
    await customer.next("message")
    token = customer.token
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    html = b"<html><script>alert(1)</script></html>"

    status, body = await _upload(connect, token, png, "image/png", "receipt.png")
    assert status == 201, body
    message = await customer.next("message", lambda m: m["message_id"] == body["message_id"])
    assert message["attachment"]["filename"] == "receipt.png"
    assert message["attachment"]["url"] == body["url"]

    status, pdf = await _upload(
        connect, token, b"%PDF-1.4 <script>", "application/pdf", "청구서.pdf"
    )
    assert status == 201, pdf

    assert (await _upload(connect, token, html, "text/html", "x.html"))[0] == 415
    assert (await _upload(connect, token, b"<svg/>", "image/svg+xml", "x.svg"))[0] == 415
    too_big = b"\0" * (5 * 1024 * 1024 + 1)
    status, err = await _upload(connect, token, too_big, "image/png", "big.png")
    assert status == 413 and "limit 5242880 bytes" in err["error"]
    assert (await _upload(connect, "sv1.bad.token", png, "image/png", "a.png"))[0] == 401

    async with aiohttp.ClientSession() as http:
        async with http.get(connect.url + body["url"]) as r:
            assert r.status == 200 and await r.read() == png
            assert r.headers["content-type"] == "image/png"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-disposition"].startswith("inline")
        async with http.get(connect.url + pdf["url"]) as r:
            assert r.headers["content-type"] == "application/octet-stream"
            assert r.headers["content-disposition"].startswith("attachment")
            assert (
                "filename*=UTF-8''%EC%B2%AD%EA%B5%AC%EC%84%9C.pdf"
                in r.headers["content-disposition"]
            )
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "sandbox" in r.headers["content-security-policy"]
        bad = body["url"].replace(body["url"].split("/")[3], "0" * 32)
        async with http.get(connect.url + bad) as r:
            assert r.status == 404


async def test_rating_and_transcript_publish_their_commands(connect: Any, router: Any) -> None:
    from switchboard.v1 import events_pb2

    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    await customer.next("message")
    ack = await customer.call("transcript", {"contact_id": contact_id})
    assert ack["ok"], ack
    ack = await customer.call(
        "rate", {"contact_id": contact_id, "score": 5, "comment": "감사합니다"}
    )
    assert ack["ok"], ack
    again = await customer.call("rate", {"contact_id": contact_id, "score": 1})
    assert again == {"ok": False, "error": "this chat has already been rated"}
    bad = await customer.call("rate", {"contact_id": contact_id, "score": 9})
    assert bad["ok"] is False and bad["error"].startswith("score")

    sub = await router.bus.js.pull_subscribe("outbound.email.send", stream="OUTBOUND")
    [msg] = await sub.fetch(1, timeout=10)
    email = events_pb2.OutboundEmail.FromString(msg.data)
    assert email.kind == "transcript" and list(email.to) == ["minji.kim@example.com"]
    assert "요금이 두 번 청구되었어요" in email.text
    [(rated, _)] = await router.read(
        f"contact.{TENANT}.chat.rated", events_pb2.SatisfactionRated, 1
    )
    assert (rated.contact_id, rated.score, rated.comment) == (contact_id, 5, "감사합니다")


async def test_a_transcript_goes_only_to_the_address_given_before_the_chat(
    connect: Any, router: Any
) -> None:
    """A visitor cannot have the chat's transcript mailed to anyone else (the pre-chat form's
    address is the only one the chat knows belongs to the customer)."""
    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    other = await customer.call(
        "transcript", {"contact_id": contact_id, "email": "victim@example.org"}
    )
    assert other == {
        "ok": False,
        "error": "a transcript is sent only to the address given before the chat",
    }
    same = await customer.call(
        "transcript", {"contact_id": contact_id, "email": "minji.kim@EXAMPLE.com"}
    )
    assert same["ok"], same

    anonymous, _, first = await connect.conversation(email=None)
    refused = await anonymous.call(
        "transcript", {"contact_id": first["contact_id"], "email": "victim@example.org"}
    )
    assert refused == {
        "ok": False,
        "error": "give your email address before the chat to receive its transcript",
    }

    sub = await router.bus.js.pull_subscribe("outbound.email.send", stream="OUTBOUND")
    [msg] = await sub.fetch(1, timeout=10)
    assert list(OutboundEmail.FromString(msg.data).to) == ["minji.kim@example.com"]
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1)


@pytest.mark.parametrize("transport", ["websocket"])
async def test_typing_and_receipts_reach_the_other_side(
    connect: Any, router: Any, transport: str
) -> None:
    customer, _, first = await connect.conversation()
    contact_id = first["contact_id"]
    await router.assigned(contact_id)
    await customer.next("status", lambda s: s["state"] == "assigned")
    agent = await connect.agent()
    assert (await agent.call("join", {"contact_id": contact_id}))["ok"]

    assert (await customer.call("typing", {"typing": True}))["ok"]
    assert await agent.next("typing") == {
        "contact_id": contact_id,
        "author": "customer",
        "typing": True,
    }
    sent = await connect.app.chat.send_agent_message(TENANT, contact_id, "agent-1", "안녕하세요")
    await customer.next("message", lambda m: m["message_id"] == sent.message_id)
    ack = await customer.call("receipt", {"message_id": sent.message_id, "state": "read"})
    assert ack["ok"], ack
    receipt = await agent.next("receipt")
    assert receipt == {
        "contact_id": contact_id,
        "message_id": sent.message_id,
        "state": "read",
        "by": "customer",
    }
    await connect.app.chat.agent_typing(TENANT, contact_id, "agent-1", True)
    assert (await customer.next("typing"))["author"] == "agent"
