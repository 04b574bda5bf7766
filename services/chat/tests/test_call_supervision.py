"""The wallboard's live call events when the chat is told of no voice gateway, and the refusals
made before any gateway is asked (the calls themselves: tests/e2e/voice/test_wallboard_calls.py,
with a real gateway and phones)."""

from __future__ import annotations

from typing import Any

from switchboard.chat.inbox.calls import CallSupervision, Endpoint


async def test_listening_needs_a_configured_gateway_a_mode_and_a_supervisor(
    connect: Any,
) -> None:
    board = await connect.agent("sup-9", roles=("supervisor",))
    none = await board.call("listen", {"contact_id": "c-1", "mode": "monitor"})
    assert not none["ok"] and none["kind"] == "FailedPrecondition", none
    assert "CHAT_VOICE_ENDPOINTS" in none["error"] and "CHAT_VOICE_SERVICE" in none["error"]
    bad = await board.call("listen", {"contact_id": "c-1", "mode": "shout"})
    assert not bad["ok"] and bad["kind"] == "InvalidArgument", bad
    nameless = await board.call("listen", {"mode": "barge"})
    assert not nameless["ok"] and nameless["kind"] == "InvalidArgument", nameless
    # Nothing is held on this socket: changing mode or leaving is refused.
    for event in ("listen_mode", "leave_call"):
        refused = await board.call(event, {"supervision_id": "nope", "mode": "whisper"})
        assert not refused["ok"] and refused["kind"] == "FailedPrecondition", refused

    agent = await connect.agent("agent-1")
    for event, data in (("live_calls", {}), ("listen", {"contact_id": "c-1"})):
        refused = await agent.call(event, data)
        assert not refused["ok"] and refused["kind"] == "PermissionDenied", refused


async def test_the_gateway_replicas_are_every_address_the_service_name_resolves_to() -> None:
    """A headless Service's name resolves to each ready replica: each is asked at its address,
    its certificate checked against the name; configured addresses come first."""
    asked: list[tuple[str, int]] = []

    async def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.0.0.11", "10.0.0.12", "fd00::13"]

    calls = CallSupervision(
        None,  # type: ignore[arg-type]
        ["gw-static:50054"],
        service="voice-gateway.switchboard.svc:50054",
        resolver=resolver,
    )
    name = "voice-gateway.switchboard.svc"
    assert await calls.gateways() == [
        Endpoint("gw-static:50054"),
        Endpoint("10.0.0.11:50054", name),
        Endpoint("10.0.0.12:50054", name),
        Endpoint("[fd00::13]:50054", name),
    ]
    assert asked == [(name, 50054)]

    async def no_record(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    calls = CallSupervision(None, [], service="voice-gateway:50054", resolver=no_record)  # type: ignore[arg-type]
    assert await calls.gateways() == []
