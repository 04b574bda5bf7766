"""Pipelined JetStream publishing where every ack has a deadline and every error reaches its caller.

nats-py 2.16.0's ``JetStreamContext.publish_async`` turns an error reply (for example
``wrong last sequence``, err_code 10071, for a write carrying ``Nats-Expected-Last-Sequence``)
into an exception raised inside its reply callback (``APIError.from_error`` raises rather than
returns), so the future the caller awaits never resolves; and a publish whose reply is lost (the
server restarted) has no deadline at all. Both left the router waiting forever after a NATS
restart. This publisher keeps its own reply subscription: an error reply fails the future with
the typed JetStream error, and a future whose ack has not come within its deadline fails with
``AckUnknown`` — the message may or may not be stored, which the caller must resolve (read the
stream back, or give up its role) before it decides anything that depends on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import api


class AckUnknown(nats.errors.TimeoutError):
    """No ack within the deadline: the message may or may not be in the stream."""

    def __init__(self, subject: str, seconds: float) -> None:
        super().__init__()
        self.subject = subject
        self.seconds = seconds

    def __str__(self) -> str:
        return f"no JetStream ack for {self.subject} within {self.seconds:g}s: outcome unknown"


class AckPublisher:
    """Publishes to JetStream without waiting; each returned future resolves with the PubAck,
    fails with the JetStream error, or fails with AckUnknown at its deadline."""

    def __init__(self, nc: NATS, timeout: float = 5.0) -> None:
        self._nc = nc
        self.timeout = timeout
        self._prefix = ""
        self._sub: Any = None
        self._futures: dict[str, asyncio.Future[api.PubAck]] = {}
        self._tokens = itertools.count()
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._futures)

    async def _ensure(self) -> None:
        if self._sub is not None:
            return
        async with self._lock:
            if self._sub is None:
                prefix = self._nc.new_inbox() + "."
                self._sub = await self._nc.subscribe(prefix + "*", cb=self._on_reply)
                self._prefix = prefix

    async def publish(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> asyncio.Future[api.PubAck]:
        await self._ensure()
        seconds = self.timeout if timeout is None else timeout
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[api.PubAck] = loop.create_future()
        self._futures[token] = future
        timer = loop.call_later(seconds, _expire, future, subject, seconds)

        def settled(_: asyncio.Future[api.PubAck]) -> None:
            timer.cancel()
            self._futures.pop(token, None)

        future.add_done_callback(settled)
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except Exception as exc:  # closed connection, outbound buffer full: nothing was sent
            if not future.done():
                future.set_exception(exc)
        return future

    async def _on_reply(self, msg: Msg) -> None:
        future = self._futures.get(msg.subject[len(self._prefix) :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(api.Header.STATUS) == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            resp = json.loads(msg.data)
        except ValueError as exc:
            future.set_exception(nats.errors.Error(f"unreadable JetStream ack: {exc}"))
            return
        if "error" in resp:
            try:
                nats.js.errors.APIError.from_error(resp["error"])  # raises the typed error
            except nats.js.errors.APIError as err:
                future.set_exception(err)
            return
        future.set_result(api.PubAck.from_response(resp))

    async def close(self) -> None:
        for future in list(self._futures.values()):
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection is already closed
                pass
            self._sub = None


def _expire(future: asyncio.Future[api.PubAck], subject: str, seconds: float) -> None:
    if not future.done():
        future.set_exception(AckUnknown(subject, seconds))
