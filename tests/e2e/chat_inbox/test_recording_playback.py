"""Call recordings played from the inbox, against the real platform: recordings stored by the
voice gateway's own RecordingStore (sealed in the `recordings` object store, announced to the
case), served back unsealed to the people allowed to hear them, by byte range for seeking, and
to no one of another tenant."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest

from switchboard.chat.inbox.recordings import PLAYBACK_LOGGER
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc

from .. import recordings
from ..recordings import stereo_wav, store_recording, voice_contact
from .test_agent_inbox import SECRET, AgentSocket, Inbox, platform, signed_in


@pytest.fixture
async def inbox(nats_url: str, database_url: str) -> Any:
    async with platform(nats_url, database_url) as made:
        yield made


@pytest.fixture
async def sockets() -> Any:
    made: list[AgentSocket] = []
    yield made
    for s in made:
        if s.sio.connected:
            await s.sio.disconnect()


async def get(
    url: str, path: str, token: str = "", **params: str
) -> tuple[int, dict[str, str], bytes]:
    headers = {k.replace("_", "-"): v for k, v in params.items() if k in ("range",)}
    query = {k: v for k, v in params.items() if k not in ("range",)}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/{path}", params=query, headers=headers) as r:
            return r.status, dict(r.headers), await r.read()


async def recorded_in_case(inbox: Inbox, contact_id: str) -> None:
    await recordings.recorded_in_case(inbox.case_port, SECRET, contact_id)


async def answered_call(inbox: Inbox, agent: AgentSocket) -> str:
    """A call offered to `agent` and answered; its contact id."""
    contact_id = str(uuid.uuid4())
    await inbox.bus.publish(voice_contact("demo", contact_id))
    offer = await agent.next("offer", lambda o: o["contact"]["contact_id"] == contact_id)
    assert (await agent.call("accept", {"offer_id": offer["offer_id"]}))["ok"]
    return contact_id


async def test_the_agent_plays_its_calls_recording_by_ranges_with_its_waveform(
    inbox: Inbox, sockets: list[AgentSocket], caplog: pytest.LogCaptureFixture
) -> None:
    agent, body = await signed_in(inbox, sockets)
    contact_id = await answered_call(inbox, agent)
    wav = stereo_wav(3.0)
    await store_recording(inbox.bus, SECRET, "demo", contact_id, wav)

    # The case panel names the recording, from the gateway's MessageAdded.
    await recorded_in_case(inbox, contact_id)
    panel = await agent.call("case", {"contact_id": contact_id})
    (k,) = [k for k in panel["case"]["contacts"] if k["contact_id"] == contact_id]
    assert [m["text"] for m in k["messages"] if m["recording"]] == ["Call recording"]

    caplog.set_level(logging.INFO, logger=PLAYBACK_LOGGER)
    status, _, data = await get(
        inbox.url, "api/agent/recording/player", body["token"], contact_id=contact_id
    )
    assert status == 200, data
    player = json.loads(data)
    assert player["duration"] == pytest.approx(3.0)
    assert player["channels"] == ["customer", "agent"]
    customer, agent_peaks = player["peaks"]
    n = len(customer)
    assert n == len(agent_peaks) > 100
    # The caller speaks loudly first, the agent more softly last: the peaks say so per channel.
    assert min(customer[: n // 4]) > 0.5 and max(customer[-n // 4 :]) == 0
    assert max(agent_peaks[: n // 4]) == 0 and 0.3 < min(agent_peaks[-n // 4 :]) < 0.5
    # A player shown is no playback yet.
    assert f"contact={contact_id} by=ko-1" not in caplog.text

    # The <audio> element's URL carries the ticket: the whole file, unsealed, as audio/wav.
    url = player["url"]
    status, headers, data = await get(inbox.url, url)
    assert (status, headers["Content-Type"], data) == (200, "audio/wav", wav)
    assert f"contact={contact_id} by=ko-1 (agent) via=player" in caplog.text
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Length"] == str(len(wav))
    # A seek: a range across two sealed chunks (64 KiB each) is 206 with its bytes only.
    status, headers, data = await get(inbox.url, url, range="bytes=65530-65545")
    assert (status, data) == (206, wav[65530:65546])
    assert headers["Content-Range"] == f"bytes 65530-65545/{len(wav)}"
    status, headers, data = await get(inbox.url, url, range="bytes=90000-")
    assert (status, data) == (206, wav[90000:])
    status, headers, data = await get(inbox.url, url, range="bytes=-100")
    assert (status, data) == (206, wav[-100:])
    status, headers, _ = await get(inbox.url, url, range=f"bytes={len(wav)}-")
    assert (status, headers["Content-Range"]) == (416, f"bytes */{len(wav)}")
    # With the inbox token itself (a tool downloading it), the same file.
    status, _, data = await get(
        inbox.url, "api/agent/recording", body["token"], contact_id=contact_id
    )
    assert (status, data) == (200, wav)

    # A ticket opens its own recording only, and only as it was sealed.
    ticket = url.split("ticket=")[1]
    status, _, _ = await get(
        inbox.url, "api/agent/recording", contact_id=str(uuid.uuid4()), ticket=ticket
    )
    assert status == 403
    forged = ticket[:-4] + ("AAAA" if not ticket.endswith("AAAA") else "BBBB")
    status, _, _ = await get(inbox.url, "api/agent/recording", contact_id=contact_id, ticket=forged)
    assert status == 401
    status, _, _ = await get(inbox.url, "api/agent/recording", contact_id=contact_id)
    assert status == 401

    # The agent who wrapped the call up still hears it (the case names it as the call's agent).
    done = await agent.call("wrap_up", {"contact_id": contact_id, "code": "resolved"})
    assert done["ok"], done
    status, _, data = await get(
        inbox.url, "api/agent/recording", body["token"], contact_id=contact_id
    )
    assert (status, data) == (200, wav)

    # Revoking the agent's tokens revokes the tickets it was given too.
    assert inbox.chat.revocations is not None
    await inbox.chat.revocations.revoke("demo", "ko-1")
    assert (await get(inbox.url, url))[0] == 401


async def test_only_the_tenants_supervisors_qa_and_the_calls_agent_hear_a_recording(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    contact_id = await answered_call(inbox, agent)
    wav = stereo_wav(1.0)
    await store_recording(inbox.bus, SECRET, "demo", contact_id, wav)
    # Another tenant's call, recorded under the same contact id scheme.
    acme_call = str(uuid.uuid4())
    acme_wav = stereo_wav(0.5)
    await store_recording(inbox.bus, SECRET, "acme", acme_call, acme_wav)

    async def fetch(token: str, cid: str = contact_id) -> tuple[int, bytes]:
        status, _, data = await get(inbox.url, "api/agent/recording", token, contact_id=cid)
        return status, data

    demo = {
        role: auth.mint(SECRET, "demo", f"someone-{role}", [role])
        for role in ("supervisor", "team_lead", "qa", "admin", "agent", "partner")
    }
    for role in ("supervisor", "team_lead", "qa", "admin"):
        assert await fetch(demo[role]) == (200, wav), role
    # An agent who did not handle the call, a partner, and the colleague signed in: refused.
    assert (await fetch(demo["agent"]))[0] == 403
    assert (await fetch(demo["partner"]))[0] == 403
    _, colleague = await signed_in(inbox, sockets, "zh-1")
    assert (await fetch(colleague["token"]))[0] == 403
    status, _, _ = await get(
        inbox.url, "api/agent/recording/player", colleague["token"], contact_id=contact_id
    )
    assert status == 403
    # Another tenant's supervisor never finds it; nor do this tenant's find acme's recording,
    # which acme's own supervisor hears.
    acme_supervisor = auth.mint(SECRET, "acme", "boss", ["supervisor"])
    assert (await fetch(acme_supervisor))[0] == 404
    assert (await fetch(demo["supervisor"], acme_call))[0] == 404
    status, _, _ = await get(
        inbox.url, "api/agent/recording/player", demo["supervisor"], contact_id=acme_call
    )
    assert status == 404
    assert await fetch(acme_supervisor, acme_call) == (200, acme_wav)
    # A call with no recording, and a malformed id.
    assert (await fetch(demo["supervisor"], str(uuid.uuid4())))[0] == 404
    assert (await fetch(demo["supervisor"], "../demo/x"))[0] == 400


async def audit_trail(inbox: Inbox, contact_id: str, done: Any) -> list[Any]:
    """The audit trail of the contact's case once `done(entries)` holds."""
    token = auth.mint(SECRET, "demo", "auditor", ["supervisor"])
    found: list[Any] = []
    async with sb_grpc.channel(f"127.0.0.1:{inbox.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def complete() -> bool:
            listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
            if not listed.cases:
                return False
            trail = await stub.GetAuditTrail(
                case_pb2.GetAuditTrailRequest(case_id=listed.cases[0].case_id)
            )
            found[:] = list(trail.entries)
            return bool(done(found))

        await eventually(complete, "the audit trail")
    return found


async def test_every_playback_is_audited_on_the_case_once_not_per_range(
    inbox: Inbox, sockets: list[AgentSocket]
) -> None:
    agent, _ = await signed_in(inbox, sockets)
    contact_id = await answered_call(inbox, agent)
    wav = stereo_wav(3.0)
    await store_recording(inbox.bus, SECRET, "demo", contact_id, wav)
    await recorded_in_case(inbox, contact_id)

    # A QA evaluator opens the player and plays it: the whole file, then seeks twice, then plays
    # it again from the start.
    qa = auth.mint(SECRET, "demo", "eva", ["qa"])
    status, _, data = await get(inbox.url, "api/agent/recording/player", qa, contact_id=contact_id)
    assert status == 200, data
    url = json.loads(data)["url"]
    # A supervisor is shown the player (the case opened) and never plays it: no playback.
    boss = auth.mint(SECRET, "demo", "boss", ["supervisor"])
    status, _, data = await get(
        inbox.url, "api/agent/recording/player", boss, contact_id=contact_id
    )
    assert status == 200, data
    # Asking for its headers only (HEAD) is no playback either.
    async with aiohttp.ClientSession() as http:
        async with http.head(f"{inbox.url}/{url}") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(len(wav))
        async with http.head(
            f"{inbox.url}/api/agent/recording?contact_id={contact_id}",
            headers={"Authorization": f"Bearer {boss}"},
        ) as r:
            assert r.status == 200
    for wanted in ("bytes=0-", "bytes=65530-65545", "bytes=90000-", "bytes=0-"):
        assert (await get(inbox.url, url, range=wanted))[0] == 206
    # Then the supervisor downloads it with its token.
    status, _, data = await get(inbox.url, "api/agent/recording", boss, contact_id=contact_id)
    assert (status, data) == (200, wav)

    def played(entries: list[Any]) -> list[Any]:
        return [e for e in entries if e.action == "recording_played"]

    entries = await audit_trail(inbox, contact_id, lambda es: len(played(es)) >= 2)
    plays = played(entries)
    # One entry for the evaluator's playback session (not one per range), one for the download.
    assert [(e.actor, json.loads(e.data_json)["via"]) for e in plays] == [
        ("qa:eva", "player"),
        ("supervisor:boss", "download"),
    ]
    assert json.loads(plays[0].data_json)["contact_id"] == contact_id
    assert json.loads(plays[0].data_json)["roles"] == ["qa"]

    # Another replica serving the same ticket's first request announces the same playback, by
    # the ticket's id: the case keeps it once.
    assert inbox.chat.inbox is not None
    ticket = inbox.chat.inbox.recordings.open_ticket(unquote(url.split("ticket=")[1]), contact_id)
    await inbox.chat.chat.notifier.recording_played(
        "demo", contact_id, "eva", ["qa"], "player", ticket.playback_id
    )

    # A player refused (a colleague who did not take the call) is no playback.
    _, colleague = await signed_in(inbox, sockets, "zh-1")
    status, _, _ = await get(
        inbox.url, "api/agent/recording/player", colleague["token"], contact_id=contact_id
    )
    assert status == 403
    status, _, data = await get(
        inbox.url, "api/agent/recording/player", boss, contact_id=contact_id
    )
    assert status == 200
    assert (await get(inbox.url, json.loads(data)["url"], range="bytes=0-"))[0] == 206
    # A tool fetching by ranges from past the start, with one token: one playback.
    tool = auth.mint(SECRET, "demo", "tool", ["admin"])
    for wanted in ("bytes=100-199", "bytes=200-", "bytes=-50"):
        status, _, data = await get(
            inbox.url, "api/agent/recording", tool, contact_id=contact_id, range=wanted
        )
        assert status == 206, data
    # Last, a team lead's download: once it is on the trail, everything before it is too.
    lead = auth.mint(SECRET, "demo", "lena", ["team_lead"])
    assert (await get(inbox.url, "api/agent/recording", lead, contact_id=contact_id))[0] == 200
    entries = await audit_trail(
        inbox, contact_id, lambda es: any(e.actor == "team_lead:lena" for e in played(es))
    )
    assert [e.actor for e in played(entries)] == [
        "qa:eva",
        "supervisor:boss",
        "supervisor:boss",
        "admin:tool",
        "team_lead:lena",
    ]


async def test_a_playback_the_bus_does_not_take_is_not_served(
    inbox: Inbox, sockets: list[AgentSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No playback goes unaudited: when its RecordingPlayed is not stored, the player's first
    request is refused (503), and the player asking again once the bus takes it plays."""
    agent, body = await signed_in(inbox, sockets)
    contact_id = await answered_call(inbox, agent)
    wav = stereo_wav(1.0)
    await store_recording(inbox.bus, SECRET, "demo", contact_id, wav)
    await recorded_in_case(inbox, contact_id)
    status, _, data = await get(
        inbox.url, "api/agent/recording/player", body["token"], contact_id=contact_id
    )
    assert status == 200, data
    url = json.loads(data)["url"]

    announce = inbox.chat.chat.notifier.recording_played

    async def refused(*args: Any) -> Any:
        raise RuntimeError("nats: no response from stream")

    monkeypatch.setattr(inbox.chat.chat.notifier, "recording_played", refused)
    status, _, data = await get(inbox.url, url)
    assert status == 503, data
    assert b"could not be audited" in data
    monkeypatch.setattr(inbox.chat.chat.notifier, "recording_played", announce)
    status, _, data = await get(inbox.url, url)
    assert (status, data) == (200, wav)
