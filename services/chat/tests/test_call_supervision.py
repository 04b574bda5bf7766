"""The wallboard's live call events when the chat is told of no voice gateway, and the refusals
made before any gateway is asked (the calls themselves: tests/e2e/voice/test_wallboard_calls.py,
with a real gateway and phones)."""

from __future__ import annotations

from typing import Any


async def test_listening_needs_a_configured_gateway_a_mode_and_a_supervisor(
    connect: Any,
) -> None:
    board = await connect.agent("sup-9", roles=("supervisor",))
    none = await board.call("listen", {"contact_id": "c-1", "mode": "monitor"})
    assert not none["ok"] and none["kind"] == "FailedPrecondition", none
    assert "CHAT_VOICE_ENDPOINTS" in none["error"]
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
