"""Call supervision's rules: who hears the supervisor in each mode, the supervisor's keys that
switch modes (4 monitor, 5 whisper, 6 barge, as Asterisk's ChanSpy), and which calls can be
supervised.

Several supervisors on one call hear each other whatever their modes (they confer as in a
ConfBridge of their own, and each hears a barging or whispering colleague as the parties do);
the agent hears the whispering and barging ones, the caller only the barging ones."""

from __future__ import annotations

import enum

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
