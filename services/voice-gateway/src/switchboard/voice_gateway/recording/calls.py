"""Recording the gateway's calls: a recorder starts when a call is first bridged (unless its
tenant's and queue's policy is off), taps both legs of the relay, takes the agent's keys to
pause and resume, and at the call's end is closed and handed to the store."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging

from switchboard.core.recording_seal import Sealer
from switchboard.voice_gateway.calls import Call
from switchboard.voice_gateway.recording.policy import Mode, RecordingPolicy
from switchboard.voice_gateway.recording.recorder import AGENT, CALLER, Recorder
from switchboard.voice_gateway.recording.store import RecordingStore

logger = logging.getLogger(__name__)


class CallRecordings:
    def __init__(
        self, policy: RecordingPolicy, store: RecordingStore | None, folder: str | None = None
    ) -> None:
        """Without a `store` nothing is recorded."""
        self.policy = policy
        self.store = store
        self.folder = folder
        self.active: dict[str, Recorder | None] = {}  # contact id -> its recorder (None: off)
        self._storing: set[asyncio.Task[None]] = set()

    def bridged(self, call: Call) -> None:
        """The call's legs were (re)bridged: tap them for its recording."""
        if self.store is None or call.caller is None or call.agent is None:
            return
        if call.contact_id not in self.active:
            mode = self.policy.mode(call.tenant, call.queue)
            recorder = None
            if mode is not Mode.OFF:
                try:
                    # Sealed as it is written: the end of the call only puts the file.
                    seal = functools.partial(
                        Sealer, self.store.master_key, call.tenant, call.contact_id
                    )
                    recorder = Recorder(self.folder, paused=mode is Mode.ON_DEMAND, seal=seal)
                except OSError as exc:  # no room for the file: the call is connected all the same
                    logger.error("call %s cannot be recorded: %s", call.contact_id, exc)
            self.active[call.contact_id] = recorder
            logger.info("call %s: recording %s", call.contact_id, mode.value)
        recorder = self.active[call.contact_id]
        if recorder is None:
            return
        call.caller.rtp.tap = recorder.taps[CALLER]
        call.agent.rtp.tap = recorder.taps[AGENT]
        call.agent.rtp.on_dtmf = recorder.agent_key

    def recorder(self, contact_id: str) -> Recorder | None:
        return self.active.get(contact_id)

    def ended(self, call: Call) -> None:
        """The call ended: its recording (if any) is closed and stored in the background (its
        last second is written by the recorders' writer thread: the event loop never waits on
        the disk)."""
        recorder = self.active.pop(call.contact_id, None)
        if recorder is None or self.store is None:
            return
        if recorder.failed or recorder.packets == 0:
            recorder.discard()
            return
        task = asyncio.ensure_future(
            self._store(self.store, call.tenant, call.contact_id, recorder, recorder.finish())
        )
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    @staticmethod
    async def _store(
        store: RecordingStore,
        tenant: str,
        contact_id: str,
        recorder: Recorder,
        finished: concurrent.futures.Future[float],
    ) -> None:
        try:
            seconds = await asyncio.wrap_future(finished)
        except OSError as exc:
            logger.error("recording of %s lost: %s", contact_id, exc)
            recorder.failed = True
        if recorder.failed:
            recorder.discard()
            return
        await store.store(tenant, contact_id, recorder.path, seconds, sealed=recorder.sealed)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for the recordings being stored (a stopping gateway's last calls)."""
        if self._storing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._storing, return_exceptions=True), timeout
                )
