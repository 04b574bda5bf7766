"""Offers from the router and the agent's phone ringing for them."""

from __future__ import annotations

from switchboard.voice_gateway.domain.state import State

MIN_RING = 0.5  # seconds: the least an offer about to expire still rings
EXPIRY_MARGIN = 0.5  # seconds: stop ringing this long before the offer expires


def can_ring(state: State) -> bool:
    """A waiting call (or callback) may ring an agent; any other state declines the offer."""
    return state in (State.QUEUED, State.CALLBACK)


def ring_timeout(default: float, expires_at: float, now: float) -> float:
    """How long the phone rings: the configured timeout, cut short by the offer's expiry
    (`expires_at` 0: the offer has none)."""
    if not expires_at:
        return default
    return max(MIN_RING, min(default, expires_at - now - EXPIRY_MARGIN))


def ringing(state: State) -> State:
    """The state while the phone rings (a callback stays one: its caller has hung up)."""
    return state if state is State.CALLBACK else State.RINGING


def unanswered(state: State) -> State:
    """The state after a ring that came to nothing: a ringing call waits in queue again."""
    return State.QUEUED if state is State.RINGING else state


def decline_reason(status: int) -> str:
    """Why the offer is declined, from the final response to the phone's INVITE."""
    return "no answer" if status in (408, 487) else f"phone answered {status}"
