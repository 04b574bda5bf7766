"""A call's recording in the QA review, in chromium on the real platform: an agent answers a call,
the caller hangs up, the voice gateway's own RecordingStore stores the recording; the evaluator
samples the call in /qa, and the review shows the recording's waveform (the inbox's player)
beside the scoring form: the evaluator plays it, the time moves on, seeks, and submits a score
while it plays. The case's audit trail records the evaluator's playback once."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from playwright.async_api import expect

from switchboard.core import auth, events
from switchboard.core import grpc as sb_grpc
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2, events_pb2

from ..recordings import stereo_wav, store_recording, voice_contact
from .conftest import SECRET, Platform
from .test_inbox_browser import sign_in
from .test_inbox_first_hour import agent
from .test_recording_player import recorded_in_case


async def sampled(platform: Platform, contact_id: str) -> None:
    """The case service has the call as handled and ended (a QA sample of voice contacts)."""
    token = auth.mint(SECRET, "demo", "test-qa", ["qa"])
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    end.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    request = case_pb2.ListQaSamplesRequest(to=end, rate=1.0, channel=contact_pb2.CHANNEL_VOICE)
    getattr(request, "from").CopyFrom(start)
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def found() -> bool:
            samples = (await stub.ListQaSamples(request)).samples
            return any(s.contact_id == contact_id for s in samples)

        await eventually(found, "the ended call in the QA sample")


async def playbacks(platform: Platform, contact_id: str) -> list[tuple[str, str]]:
    """(actor, via) of the case's recording_played audit entries, once there is one."""
    token = auth.mint(SECRET, "demo", "auditor", ["supervisor"])
    got: list[tuple[str, str]] = []
    async with sb_grpc.channel(f"127.0.0.1:{platform.case_port}", token) as ch:
        stub = case_pb2_grpc.CaseServiceStub(ch)

        async def audited() -> bool:
            listed = await stub.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
            trail = await stub.GetAuditTrail(
                case_pb2.GetAuditTrailRequest(case_id=listed.cases[0].case_id)
            )
            got[:] = [
                (e.actor, json.loads(e.data_json)["via"])
                for e in trail.entries
                if e.action == "recording_played"
            ]
            return bool(got)

        await eventually(audited, "the playback on the audit trail")
    return got


async def current(page: Any) -> float:
    return float(await page.get_by_test_id("rec-time").get_attribute("data-current") or 0)


async def test_the_evaluator_plays_a_calls_recording_while_scoring_it(
    platform: Platform, pages: Any
) -> None:
    inbox = await agent(pages, platform)
    contact_id = str(uuid.uuid4())
    await platform.bus.publish(voice_contact("demo", contact_id))
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    # The caller hangs up; the gateway stores the call's recording.
    await platform.bus.publish(
        events_pb2.ContactEnded(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_VOICE, "voice-gateway"),
            contact_id=contact_id,
            agent_id="ko-1",
            reason=events_pb2.END_REASON_CUSTOMER_LEFT,
        )
    )
    await store_recording(platform.bus, SECRET, "demo", contact_id, stereo_wav(3.0))
    await recorded_in_case(platform, contact_id)
    await sampled(platform, contact_id)

    qa = await pages.new(f"{platform.url}/qa")
    await sign_in(qa, "qa-1", "demo-qa-1")
    await qa.get_by_test_id("s-rate").fill("100")
    await qa.get_by_test_id("s-channel").select_option("voice")
    await qa.get_by_test_id("s-load").click()
    row = qa.locator(f"[data-testid=sample][data-contact='{contact_id}']")
    await expect(row).to_have_count(1)
    await row.get_by_test_id("review").click()

    # The recording's player beside the form: both channels' waveform, labelled.
    box = qa.get_by_test_id("qa-recording")
    await expect(box).to_be_visible()
    player = box.get_by_test_id("recording")
    await expect(player).to_have_attribute("data-contact-id", contact_id)
    await expect(player.get_by_test_id("rec-channel")).to_have_text(["고객", "상담원"])
    await expect(player.get_by_test_id("rec-time")).to_have_text("0:00 / 0:03")
    wave = player.get_by_test_id("waveform")
    await expect(wave).to_have_attribute("data-bars", re.compile(r"^[1-9][0-9]{2,}$"))  # > 100
    form = qa.get_by_test_id("form-items")
    await expect(form.get_by_test_id("form-item").first).to_be_visible()
    wave_box, form_box = await wave.bounding_box(), await form.bounding_box()
    assert wave_box is not None and form_box is not None
    assert wave_box["x"] + wave_box["width"] <= form_box["x"]  # side by side, the form right

    # Play: the time moves on.
    play = player.get_by_test_id("rec-play")
    await play.click()
    await expect(play).to_have_attribute("data-state", "playing")
    await eventually(lambda: _moved(qa, 0.3), "the recording playing on")
    await play.click()
    await expect(play).to_have_attribute("data-state", "paused")
    # Seek to 80 %, play on from there while scoring.
    await wave.click(position={"x": wave_box["width"] * 0.8, "y": wave_box["height"] / 2})
    await expect(player.get_by_test_id("rec-time")).to_have_text("0:02 / 0:03")
    await play.click()
    await eventually(lambda: _moved(qa, 2.5), "the recording playing on from the seek")
    greeting = qa.locator("[data-testid=form-item][data-item=greeting]")
    await greeting.locator("input[value=fail]").check()
    await qa.get_by_test_id("qa-comment").fill("첫 인사가 없었습니다")
    await pages.shot(qa, "qa-review-voice-recording")
    await qa.get_by_test_id("submit-score").click()
    await expect(qa.get_by_test_id("review-result")).to_contain_text(
        "점수 88.9: 치명적 오류 0건, 비치명적 오류 1건"
    )
    await pages.shot(qa, "qa-review-voice-scored")

    # Back to the samples: the player stops; the call is scored.
    await qa.get_by_test_id("back").click()
    await expect(box).to_be_hidden()
    await expect(row.get_by_test_id("eval-status")).to_have_count(1)
    # The evaluator's playback is on the case's audit trail, once (not per byte range). The
    # agent's inbox, still on the case when its recording arrived, may have shown the agent a
    # player too: shown, never played, it is no playback.
    played = await playbacks(platform, contact_id)
    assert played == [("qa:qa-1", "player")]
    assert pages.errors == []


async def _moved(page: Any, beyond: float) -> bool:
    return await current(page) > beyond
