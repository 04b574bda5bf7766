"""SDP offers and answers (RFC 4566, RFC 3264) for one G.711 audio stream with RFC 4733
telephone-events."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from switchboard.voice_gateway.media.g711 import PCMA, PCMU

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_NAMES = {PCMU: "PCMU", PCMA: "PCMA"}


class SdpError(Exception):
    pass


@dataclass
class Sdp:
    host: str
    port: int
    payloads: list[int]
    telephone_event: int | None = None
    direction: str = "sendrecv"
    rtpmap: dict[int, str] = field(default_factory=dict)

    @property
    def on_hold(self) -> bool:
        """RFC 3264 section 8.4 (and the old c=0.0.0.0 form of RFC 2543)."""
        return self.direction in ("sendonly", "inactive") or self.host == "0.0.0.0"


def parse(body: bytes) -> Sdp:
    host, port, payloads, direction = "", -1, [], "sendrecv"
    rtpmap: dict[int, str] = {}
    in_audio = False
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    for line in text.splitlines():
        kind, _, value = line.strip().partition("=")
        if kind == "c" and (in_audio or not host):
            parts = value.split()
            if len(parts) != 3:
                raise SdpError("Malformed c= line")
            host = parts[2].split("/")[0]
        elif kind == "m":
            parts = value.split()
            in_audio = bool(parts) and parts[0] == "audio" and port < 0
            if in_audio:
                if len(parts) < 4 or not parts[1].isdigit():
                    raise SdpError("Malformed m= line")
                port = int(parts[1])
                payloads = [int(p) for p in parts[3:] if p.isdigit()]
        elif kind == "a" and in_audio:
            if value in DIRECTIONS:
                direction = value
            elif value.startswith("rtpmap:"):
                pt, _, name = value[7:].partition(" ")
                if pt.isdigit():
                    rtpmap[int(pt)] = name.strip()
        elif kind == "a" and value in DIRECTIONS and port < 0:
            direction = value
    if port < 0 or not host:
        raise SdpError("No audio stream in SDP")
    te = next((pt for pt, n in rtpmap.items() if n.lower().startswith("telephone-event")), None)
    return Sdp(host, port, payloads, te, direction, rtpmap)


def choose(offer: Sdp, preferred: tuple[int, ...] = (PCMU, PCMA)) -> int | None:
    """The G.711 payload type to answer with: the offerer's first one we support."""
    for pt in offer.payloads:
        if pt in preferred:
            return pt
    return None


def build(
    host: str,
    port: int,
    payload: int | list[int],
    direction: str = "sendrecv",
    telephone_event: int | None = 101,
    session: str = "",
) -> bytes:
    pts = payload if isinstance(payload, list) else [payload]
    session = session or str(secrets.randbelow(2**31))
    fmts = [str(pt) for pt in pts]
    lines = [
        "v=0",
        f"o=switchboard {session} {session} IN IP4 {host}",
        "s=switchboard",
        f"c=IN IP4 {host}",
        "t=0 0",
    ]
    if telephone_event is not None:
        fmts.append(str(telephone_event))
    lines.append(f"m=audio {port} RTP/AVP {' '.join(fmts)}")
    for pt in pts:
        lines.append(f"a=rtpmap:{pt} {_NAMES[pt]}/8000")
    if telephone_event is not None:
        lines.append(f"a=rtpmap:{telephone_event} telephone-event/8000")
        lines.append(f"a=fmtp:{telephone_event} 0-15")
    lines.append("a=ptime:20")
    lines.append(f"a={direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def answer_direction(offered: str) -> str:
    return {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)
