"""Call supervision's rules: who hears the supervisor in each mode, the supervisor's keys that
switch modes (4 monitor, 5 whisper, 6 barge, as Asterisk's ChanSpy), and which calls can be
supervised.

Several supervisors on one call hear each other whatever their modes (they confer as in a
ConfBridge of their own, and each hears a barging or whispering colleague as the parties do);
the agent hears the whispering and barging ones, the caller only the barging ones."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from switchboard.voice_gateway.domain.state import State


class Mode(enum.Enum):
    MONITOR = "monitor"  # the supervisor hears both parties; neither hears the supervisor
    WHISPER = "whisper"  # ... and the agent hears the supervisor
    BARGE = "barge"  # ... and so does the caller: everyone hears everyone


KEYS = {"4": Mode.MONITOR, "5": Mode.WHISPER, "6": Mode.BARGE}


def mode_for_key(digit: str) -> Mode | None:
    """The mode a key on the supervisor's phone switches to (None: not a mode key)."""
    return KEYS.get(digit)


def agent_hears(mode: Mode) -> bool:
    return mode in (Mode.WHISPER, Mode.BARGE)


def caller_hears(mode: Mode) -> bool:
    return mode is Mode.BARGE


def supervisor_hears(mode: Mode) -> bool:
    """Whether another supervisor on the same call hears a supervisor in `mode`: always."""
    return True


def recorded_in(mode: Mode) -> tuple[str, ...]:
    """The channels of the call's recording a supervisor's voice goes into: those of the
    parties who hear it (the agent's when whispering, both when barging; none monitoring)."""
    return tuple(
        party for party, hears in (("caller", caller_hears), ("agent", agent_hears)) if hears(mode)
    )


def can_supervise(state: State) -> bool:
    """Only a connected call (the agent talking to the caller, or holding them) is supervised."""
    return state is State.CONNECTED


# ---- dialling in on another replica ---------------------------------------------------------


@dataclass(frozen=True)
class SipAddress:
    """Where a gateway replica takes SIP: its advertised host, the port of UDP and TCP, and
    that of TLS (0: none)."""

    host: str
    port: int
    tls_port: int = 0


def redirect_uri(user: str, holder: SipAddress, transport: str) -> str | None:
    """The Contact of the `302 Moved Temporarily` sending a phone that dialled `user` (the
    extension and agent id) over `transport` to the replica holding the call (RFC 3261 section
    8.1.3.4: the phone sends its INVITE there); None when that replica cannot take the phone's
    transport (a phone on TLS is never sent to plain TCP or UDP)."""
    host = f"[{holder.host}]" if ":" in holder.host else holder.host
    if transport == "tls":
        return f"sip:{user}@{host}:{holder.tls_port};transport=tls" if holder.tls_port else None
    suffix = ";transport=tcp" if transport == "tcp" else ""
    return f"sip:{user}@{host}:{holder.port}{suffix}"
