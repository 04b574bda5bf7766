"""Hold and resume by re-INVITE (RFC 3264 section 8.4)."""

from __future__ import annotations

from switchboard.voice_gateway.media import sdp


def answer_direction(offer: sdp.Sdp | None) -> str:
    """The direction in the gateway's answer to a re-INVITE: the mirror of the offer's, and
    inactive for an RFC 2543 hold (c=0.0.0.0); sendrecv when the re-INVITE has no SDP."""
    if offer is None:
        return "sendrecv"
    if offer.host == "0.0.0.0":
        return "inactive"
    return sdp.answer_direction(offer.direction)
