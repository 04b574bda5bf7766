"""Where a call stands, from the caller's answer to its end."""

from __future__ import annotations

import enum


class State(enum.Enum):
    IVR = "ivr"  # answered, in the menus; no contact yet
    QUEUED = "queued"  # a contact waiting for an agent, the caller hears music on hold
    RINGING = "ringing"  # an agent's phone is ringing for it
    CONNECTED = "connected"  # caller and agent bridged
    CALLBACK = "callback"  # the caller hung up and keeps their place for a callback
    SURVEY = "survey"  # the agent hung up; the caller rates the call (1-5 on the keypad)
    ENDED = "ended"


def is_live(state: State) -> bool:
    """Counts against the call limit: every call from its INVITE on, except a callback (whose
    caller has hung up)."""
    return state is not State.CALLBACK


def is_over(state: State) -> bool:
    """The caller is gone: the call ended, or became a callback."""
    return state in (State.ENDED, State.CALLBACK)
