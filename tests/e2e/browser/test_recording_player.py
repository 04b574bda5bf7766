"""A call's recording in the inbox's case panel, in chromium: the agent answers a call, the voice
gateway's own RecordingStore seals and stores a stereo recording of it and announces it to the
case, and the agent plays it there: the waveform is drawn from both channels, labelled customer
and agent; playing moves the time on, clicking the waveform seeks, and the browser fetches the
recording by byte ranges (206)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from playwright.async_api import expect

from switchboard.testing.waiting import eventually

from .. import recordings
from ..recordings import stereo_wav, store_recording, voice_contact
from .conftest import SECRET, Platform
from .test_inbox_first_hour import agent


async def recorded_in_case(platform: Platform, contact_id: str) -> None:
    await recordings.recorded_in_case(platform.case_port, SECRET, contact_id)


async def current(page: Any) -> float:
    return float(await page.get_by_test_id("rec-time").get_attribute("data-current") or 0)


async def test_the_agent_plays_and_seeks_a_calls_recording_in_the_case_panel(
    platform: Platform, pages: Any
) -> None:
    inbox = await agent(pages, platform)
    statuses: list[int] = []
    inbox.on(
        "response",
        lambda r: statuses.append(r.status) if "/api/agent/recording?" in r.url else None,
    )
    contact_id = str(uuid.uuid4())
    await platform.bus.publish(voice_contact("demo", contact_id))
    await expect(inbox.get_by_test_id("offer")).to_have_count(1)
    await inbox.keyboard.press("a")
    await expect(inbox.get_by_test_id("contact-item")).to_have_count(1)
    # No recording until the call ends and the gateway stores it.
    await expect(inbox.get_by_test_id("case-ref")).not_to_be_empty()
    await expect(inbox.get_by_test_id("recording")).to_have_count(0)

    await store_recording(platform.bus, SECRET, "demo", contact_id, stereo_wav(3.0))
    await recorded_in_case(platform, contact_id)
    await inbox.get_by_test_id("contact-item").click()  # the case panel is read again

    player = inbox.get_by_test_id("recording")
    await expect(player).to_have_count(1)
    await expect(player.get_by_test_id("rec-channel")).to_have_text(["고객", "상담원"])
    await expect(player.get_by_test_id("rec-time")).to_have_text("0:00 / 0:03")
    wave = player.get_by_test_id("waveform")
    await expect(wave).to_have_attribute("data-bars", re.compile(r"^[1-9][0-9]{2,}$"))  # > 100
    # The waveform is painted: tall in the customer's row (above) in the call's first third, in
    # the agent's row (below) in its last third; a thin line where each side is silent.
    extent = await wave.evaluate(
        """c => {
            const g = c.getContext('2d'), w = c.width, h = c.height;
            const rows = (x0, x1, y0, y1) => {  // how many pixel rows hold any ink
                const d = g.getImageData(x0, y0, x1 - x0, y1 - y0).data;
                let n = 0;
                for (let y = 0; y < y1 - y0; y++) {
                    for (let x = 0; x < x1 - x0; x++) {
                        if (d[(y * (x1 - x0) + x) * 4 + 3] > 0) { n++; break; }
                    }
                }
                return n;
            };
            const first = [Math.round(w * 0.05), Math.round(w * 0.25)];
            const last = [Math.round(w * 0.75), Math.round(w * 0.95)];
            return {
                customerFirst: rows(...first, 0, h / 2), customerLast: rows(...last, 0, h / 2),
                agentFirst: rows(...first, h / 2, h), agentLast: rows(...last, h / 2, h),
            };
        }"""
    )
    assert extent["customerFirst"] > 15 and extent["customerLast"] <= 3, extent
    assert extent["agentLast"] > 8 and extent["agentFirst"] <= 3, extent
    assert extent["customerFirst"] > extent["agentLast"], extent  # the caller spoke louder

    # Play: the time moves on; pause: it stops.
    play = player.get_by_test_id("rec-play")
    await expect(play).to_have_text("재생")
    # Until then the recording is not fetched: a player shown is no playback (the first request
    # of its audio is the one audited on the case).
    await expect(play).to_be_enabled()
    audio = player.get_by_test_id("rec-audio")
    assert await audio.evaluate("a => a.preload") == "none"
    assert await audio.evaluate("a => a.readyState") == 0
    assert statuses == []
    await play.click()
    await expect(play).to_have_attribute("data-state", "playing")
    await eventually(lambda: _moved(inbox, 0.3), "the recording playing on")
    await play.click()
    await expect(play).to_have_attribute("data-state", "paused")
    await expect(play).to_have_text("재생")

    # Seek: a click at 80% of the waveform jumps to 2.4 s of 3.
    box = await wave.bounding_box()
    assert box is not None
    await wave.click(position={"x": box["width"] * 0.8, "y": box["height"] / 2})
    await expect(player.get_by_test_id("rec-time")).to_have_text("0:02 / 0:03")
    assert 2.2 < await current(inbox) < 2.6
    await play.click()
    await eventually(lambda: _moved(inbox, 2.6), "the recording playing on from the seek")
    await pages.shot(inbox, "inbox-recording-player")
    # The <audio> element fetched the recording by byte ranges.
    assert 206 in statuses, statuses
    assert pages.errors == []


async def _moved(page: Any, beyond: float) -> bool:
    return await current(page) > beyond
