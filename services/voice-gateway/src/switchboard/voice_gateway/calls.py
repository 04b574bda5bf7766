"""A call through the gateway: the caller's leg, the IVR, waiting in queue, ringing agents'
phones, the bridge, hold, transfer and callback, supervisors listening in; and the events and
durations of each step."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from switchboard.voice_gateway.config import NumberPlan
from switchboard.voice_gateway.domain.state import State
from switchboard.voice_gateway.domain.supervision import Mode
from switchboard.voice_gateway.media.rtp import RtpSession
from switchboard.voice_gateway.sip.dialog import Dialog
from switchboard.voice_gateway.sip.transactions import ClientTransaction

__all__ = ["Call", "Leg", "State", "Supervisor"]

logger = logging.getLogger(__name__)


@dataclass
class Leg:
    dialog: Dialog
    rtp: RtpSession


@dataclass(eq=False)
class Supervisor:
    """A supervisor's phone joined to a call: its leg hears the mix of both parties."""

    supervision_id: str
    supervisor_id: str
    leg: Leg
    mode: Mode
    # What feeds the supervisor's mix from the caller's and the agent's legs (removed on leaving).
    feeds: list[tuple[Leg, Callable[[bytes], None]]] = field(default_factory=list)
    events: int = 0  # published so far (each event's id counts them)
    # Where its voice goes into the call's recording in its present mode (None: nowhere).
    record: Callable[[bytes], None] | None = None


@dataclass
class Call:
    contact_id: str
    plan: NumberPlan
    caller_number: str
    dialled: str
    caller: Leg | None
    payload_type: int
    state: State = State.IVR
    language: str = ""
    skills: list[str] = field(default_factory=list)
    queue: str = ""
    digits: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    agent: Leg | None = None
    agent_id: str = ""
    offer_id: str = ""
    ringing: ClientTransaction | None = None
    ring_task: asyncio.Task[None] | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # Durations (monotonic clock); `waited` is the router's queued -> assigned.
    queued_at: float = 0.0
    connected_at: float = 0.0
    waited: float = 0.0
    held_since: float | None = None
    hold_total: float = 0.0
    holds: int = 0
    transfers: int = 0
    handled_offers: set[str] = field(default_factory=set)
    # The offers this call rings an agent for, each resolved when the router withdraws it.
    withdrawals: dict[str, asyncio.Future[str]] = field(default_factory=dict)
    supervisors: dict[str, Supervisor] = field(default_factory=dict)  # by supervision id

    @property
    def tenant(self) -> str:
        return self.plan.tenant

    def waited_so_far(self) -> float:
        return time.monotonic() - self.queued_at if self.queued_at else 0.0

    def start_hold(self) -> bool:
        if self.held_since is not None:
            return False
        self.held_since = time.monotonic()
        self.holds += 1
        return True

    def end_hold(self) -> bool:
        if self.held_since is None:
            return False
        self.hold_total += time.monotonic() - self.held_since
        self.held_since = None
        return True

    def talk(self) -> float:
        return time.monotonic() - self.connected_at if self.connected_at else 0.0

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def cancel_tasks(self, keep: asyncio.Task[None] | None = None) -> None:
        # The ring task finishes by itself: it must ACK and BYE a phone that answers late.
        for task in list(self.tasks):
            if task not in (keep, self.ring_task, asyncio.current_task()):
                task.cancel()
