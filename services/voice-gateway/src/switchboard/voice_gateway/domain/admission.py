"""Whether a new call from the trunk is taken: the checks on its INVITE, in order, before
anything is answered or a media port opened."""

from __future__ import annotations

from dataclasses import dataclass

from switchboard.voice_gateway.config import NumberPlan
from switchboard.voice_gateway.domain.refused import Refused
from switchboard.voice_gateway.media import sdp


@dataclass(frozen=True)
class Admitted:
    plan: NumberPlan
    offer: sdp.Sdp
    payload_type: int  # PCMU or PCMA, from the offer


def capacity(
    known_dialog: bool, live_calls: int, max_calls: int, retry_after: int
) -> Refused | None:
    """Refuses an INVITE whose Call-ID already is a call (a loop) or one over the call limit."""
    if known_dialog:
        return Refused(482, "Loop Detected")
    if live_calls >= max_calls:
        return Refused(503, "Service Unavailable: call limit reached", retry_after)
    return None


def offer(plan: NumberPlan | None, body: bytes) -> Admitted | Refused:
    """Takes a call to a configured number whose SDP offers G.711."""
    if plan is None:
        return Refused(404, "Number Not Configured")
    try:
        parsed = sdp.parse(body) if body else None
    except sdp.SdpError as exc:
        return Refused(488, f"Not Acceptable Here: {exc}")
    pt = sdp.choose(parsed) if parsed else None
    if parsed is None or pt is None:
        return Refused(488, "Not Acceptable Here: offer PCMU or PCMA")
    return Admitted(plan, parsed, pt)
