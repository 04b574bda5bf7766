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
from collections.abc import Sequence
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
        # Reply token -> what waits for its ack: a `publish` future, or a `publish_all` batch.
        self._futures: dict[str, asyncio.Future[api.PubAck] | _Batch] = {}
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

    async def publish_all(
        self,
        messages: Sequence[tuple[str, bytes, dict[str, str] | None]],
        timeout: float | None = None,
    ) -> list[api.PubAck]:
        """Publish (subject, data, headers) messages pipelined and return their PubAcks once
        JetStream has stored every one; raise the first JetStream error, or AckUnknown at the
        deadline (then some may be stored). One future and one deadline for the whole batch,
        where `publish` arms one of each per message: what a batch of many small writes (key-value
        entries, object chunks) costs on the event loop."""
        future = await self.send_all(messages, timeout)
        try:
            return await future
        finally:
            if not future.done():
                future.cancel()

    async def send_all(
        self,
        messages: Sequence[tuple[str, bytes, dict[str, str] | None]],
        timeout: float | None = None,
    ) -> asyncio.Future[list[api.PubAck]]:
        """Publish (subject, data, headers) messages pipelined without waiting: the one future
        returned resolves with their PubAcks once JetStream has stored every one, or fails with
        the first JetStream error, with AckUnknown at the deadline, or with the error of a send
        that failed (nothing after it was sent). Cancelling it stops waiting for the acks."""
        loop = asyncio.get_running_loop()
        if not messages:
            done: asyncio.Future[list[api.PubAck]] = loop.create_future()
            done.set_result([])
            return done
        await self._ensure()
        seconds = self.timeout if timeout is None else timeout
        batch = _Batch(loop.create_future(), len(messages))
        tokens = [str(next(self._tokens)) for _ in messages]
        subjects: dict[str, str] = {}
        for n, token in enumerate(tokens):
            self._futures[token] = batch
            batch.slots[token] = n
            subjects[token] = messages[n][0]
        timer = loop.call_later(seconds, batch.expire, subjects, seconds)

        def settled(_: asyncio.Future[list[api.PubAck]]) -> None:
            timer.cancel()
            for token in tokens:
                self._futures.pop(token, None)

        batch.future.add_done_callback(settled)
        try:
            for token, (subject, data, headers) in zip(tokens, messages, strict=True):
                await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except Exception as exc:  # closed connection, outbound buffer full: the rest not sent
            if not batch.future.done():
                batch.future.set_exception(exc)
        except BaseException:  # cancelled mid-way: nobody is left to wait for the acks
            batch.future.cancel()
            raise
        return batch.future

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) :]
        future = self._futures.get(token)
        if isinstance(future, _Batch):
            self._settle(future, token, msg)
            return
        if future is None or future.done():
            return
        resp = _reply(msg)
        if isinstance(resp, Exception):
            future.set_exception(resp)
        else:
            future.set_result(api.PubAck.from_response(resp))

    def _settle(self, batch: _Batch, token: str, msg: Msg) -> None:
        future = batch.future
        n = batch.slots.pop(token, None)
        if n is None or future.done():
            return
        self._futures.pop(token, None)
        resp = _reply(msg)
        if isinstance(resp, Exception):
            future.set_exception(resp)
            return
        batch.acks[n] = api.PubAck(
            stream=resp["stream"],
            seq=resp["seq"],
            domain=resp.get("domain"),
            duplicate=resp.get("duplicate"),
        )
        batch.missing -= 1
        if not batch.missing:
            future.set_result(batch.acks)

    async def close(self) -> None:
        for future in list(self._futures.values()):
            waiting = future.future if isinstance(future, _Batch) else future
            if not waiting.done():
                waiting.set_exception(nats.errors.ConnectionClosedError())
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # the connection is already closed
                pass
            self._sub = None


class _Batch:
    """The acks `publish_all` waits for: one future, resolved when every slot is filled."""

    __slots__ = ("acks", "future", "missing", "slots")

    def __init__(self, future: asyncio.Future[list[api.PubAck]], size: int) -> None:
        self.future = future
        self.slots: dict[str, int] = {}
        self.acks: list[Any] = [None] * size
        self.missing = size

    def expire(self, subjects: dict[str, str], seconds: float) -> None:
        if not self.future.done():
            token = next((t for t, n in self.slots.items() if self.acks[n] is None), "")
            self.future.set_exception(AckUnknown(subjects.get(token, ""), seconds))


def _expire(future: asyncio.Future[api.PubAck], subject: str, seconds: float) -> None:
    if not future.done():
        future.set_exception(AckUnknown(subject, seconds))


def _reply(msg: Msg) -> dict[str, Any] | Exception:
    """A JetStream publish reply read: the ack's fields, or the error it stands for."""
    if msg.headers and msg.headers.get(api.Header.STATUS) == "503":
        return nats.js.errors.NoStreamResponseError()
    try:
        resp: dict[str, Any] = json.loads(msg.data)
    except ValueError as exc:
        return nats.errors.Error(f"unreadable JetStream ack: {exc}")
    if "error" in resp:
        try:
            nats.js.errors.APIError.from_error(resp["error"])  # raises the typed error
        except nats.js.errors.APIError as err:
            return err
    return resp
