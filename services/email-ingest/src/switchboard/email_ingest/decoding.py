"""Decoding fetched mail off the event loop: MIME parsing is the ingest's largest CPU cost, so a
batch is decoded in worker processes (a share of the batch each) while the event loop goes on
storing and publishing the previous one. With no workers, mail is decoded inline.

A worker is `python -m switchboard.email_ingest.decoding`, which imports only the decoder and
reads length-prefixed pickled requests on its standard input (pickle only between this process
and the child it started). A mail that kills its worker or holds it past the deadline (the
decoder exhausting memory, or looping) takes no other mail with it: the share is decoded again
one mail at a time, and a mail that fails alone is quarantined as undecodable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from switchboard.core import language
from switchboard.email_ingest.domain import mime, threads

logger = logging.getLogger(__name__)


@dataclass
class Decoded:
    key: str  # in the seen set: tenant, Message-ID and content hash
    raw_hash: str
    mail: mime.ParsedMail
    quarantine: str = ""  # the reason, when it cannot become a contact
    # (BCP 47 tag, probability) detected in the subject and new text, for a mail that becomes a
    # contact and does not say its language (a route may still set it).
    language: tuple[str, float] | None = None


@dataclass(frozen=True)
class Raw:
    data: bytes
    size: int  # the full size, when `data` is only the header of an oversize mail
    tenant: str


def decode(raw: Raw, max_message_bytes: int) -> Decoded:
    """Decode one mail and name it in the seen set (no I/O; never raises on the mail's content)."""
    tenant = raw.tenant
    raw_hash = mime.content_hash(raw.data)
    size = max(raw.size, len(raw.data))
    if size > max_message_bytes:
        mail = mime.parse(raw.data)  # the header at least
        key = threads.key("seen", tenant, mail.message_id, raw_hash, str(size))
        reason = f"message of {size} bytes exceeds the limit of {max_message_bytes} bytes"
        return Decoded(key, raw_hash, mail, reason)
    try:
        mail = mime.parse(raw.data)
    except Exception as exc:  # the decoder's own failure must not lose the mail
        logger.exception("mail of tenant %s could not be decoded", tenant)
        return _undecodable(raw, raw_hash, f"undecodable: {exc!r}")
    key = threads.key("seen", tenant, mail.message_id, raw_hash)
    if not mail.from_address and not mail.body.strip() and not mail.attachments:
        reason = "no sender, no text and no attachments: " + "; ".join(mail.problems[:5])
        return Decoded(key, raw_hash, mail, reason)
    detected = None
    if not mail.content_language:
        detected = language.detect(f"{mail.subject}\n{mail.new_text or mail.body}")
    return Decoded(key, raw_hash, mail, language=detected)


def _undecodable(raw: Raw, raw_hash: str, reason: str) -> Decoded:
    key = threads.key("seen", raw.tenant, "", raw_hash)
    return Decoded(key, raw_hash, mime.ParsedMail(size=max(raw.size, len(raw.data))), reason)


def decode_all(raws: list[Raw], max_message_bytes: int) -> list[Decoded]:
    return [decode(raw, max_message_bytes) for raw in raws]


_FRAME = struct.Struct(">Q")


def _write_frame(out: BinaryIO, value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_FRAME.pack(len(data)) + data)
    out.flush()


def _serve(inp: BinaryIO, out: BinaryIO) -> None:
    """A worker's loop: (mails, max_message_bytes) in, their Decoded out, until end of input.
    An empty list first says it is ready (its imports done)."""
    _write_frame(out, [])
    language.warm()  # while the first batch is on its way
    while True:
        head = inp.read(_FRAME.size)
        if len(head) < _FRAME.size:
            return
        (size,) = _FRAME.unpack(head)
        raws, max_message_bytes = pickle.loads(inp.read(size))
        _write_frame(out, decode_all(raws, max_message_bytes))


def default_workers() -> int:
    """One worker per CPU beyond the first two (the event loop's and NATS's), at most four; none
    (decoding inline) on two CPUs or fewer, where a worker competes with the event loop for
    the same CPUs and only adds copying."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(4, max(0, (cpus or 1) - 2))


class DecoderFailed(Exception):
    """A worker died, or did not answer within the deadline, while decoding mail."""


class DecoderUnavailable(Exception):
    """A worker could not be started: no mail's fault, so none is quarantined for it."""


class _Worker:
    """A decoder process. Its pipes are read and written in a thread: through the event loop, a
    batch's megabyte would move a pipe's buffer at a time between the loop's other work."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Worker:
        """A worker, once it is ready (its start is not counted in a batch's deadline)."""
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "switchboard.email_ingest.decoding"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        worker = cls(proc)
        try:
            await asyncio.to_thread(worker._answer)
        except DecoderFailed as exc:
            await worker.kill()
            raise DecoderUnavailable(f"a mail decoder process did not start: {exc}") from exc
        except BaseException:
            await worker.kill()
            raise
        return worker

    def _answer(self) -> Any:
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(_FRAME.size)
        if len(head) == _FRAME.size:
            (size,) = _FRAME.unpack(head)
            data = self.proc.stdout.read(size)
            if len(data) == size:
                return pickle.loads(data)
        raise DecoderFailed(f"the decoder exited ({self.proc.poll()})")

    def _round_trip(self, request: bytes) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(_FRAME.pack(len(request)) + request)
        self.proc.stdin.flush()
        return self._answer()

    async def call(self, raws: list[Raw], max_message_bytes: int, timeout: float) -> Any:
        data = pickle.dumps((raws, max_message_bytes), protocol=pickle.HIGHEST_PROTOCOL)
        done = asyncio.ensure_future(asyncio.to_thread(self._round_trip, data))
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout)
        except (OSError, TimeoutError, DecoderFailed) as exc:
            await self.kill(done)
            why = f"no answer within {timeout:g}s" if isinstance(exc, TimeoutError) else str(exc)
            raise DecoderFailed(why or type(exc).__name__) from exc
        except BaseException:
            await self.kill(done)
            raise

    async def kill(self, pending: asyncio.Future[Any] | None = None) -> None:
        """End the process (a read in progress then ends) and release its pipes."""
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await asyncio.to_thread(self.proc.wait)
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
        self._release()

    def _release(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    async def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 5)
        except TimeoutError:
            await self.kill()
        self._release()


class Decoder:
    """Decodes batches of mail in `workers` processes, or inline. Mail is decoded inline while
    the workers start, and when they cannot be started. `timeout` bounds a worker's answer: for
    a share of a batch, and for one mail alone."""

    def __init__(self, workers: int = 0, timeout: float = 60.0) -> None:
        self.workers = max(0, workers)
        self.timeout = timeout
        self._idle: list[_Worker] = []
        self._free = asyncio.Semaphore(self.workers)
        self._all: set[_Worker] = set()
        self._starting: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the workers in the background (they take a moment; the first mail need not
        wait for them)."""
        if self.workers and self._starting is None:
            self._starting = asyncio.create_task(self._start(), name="mail-decoders")

    async def _start(self) -> None:
        started = await asyncio.gather(
            *(_Worker.start() for _ in range(self.workers - len(self._all))),
            return_exceptions=True,
        )
        for worker in started:
            if isinstance(worker, _Worker):
                self._all.add(worker)
                self._idle.append(worker)
            else:
                logger.error("%s", worker)

    async def _call(self, raws: list[Raw], max_message_bytes: int) -> Any:
        async with self._free:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                worker = await _Worker.start()
                self._all.add(worker)
            try:
                result = await worker.call(raws, max_message_bytes, self.timeout)
            except BaseException:
                self._all.discard(worker)
                if worker.proc.poll() is None:
                    await worker.kill()
                raise
            self._idle.append(worker)
            return result

    async def decode(self, raws: list[Raw], max_message_bytes: int) -> list[Decoded]:
        """Each mail decoded, in order; never raises on the mails' content."""
        if not raws:
            return []
        if not self.workers or (self._starting is not None and not self._starting.done()):
            return decode_all(raws, max_message_bytes)
        # Contiguous shares, one a worker (fewer, larger messages between the processes).
        share = -(-len(raws) // self.workers)
        parts = [raws[i : i + share] for i in range(0, len(raws), share)]
        done = await asyncio.gather(
            *(self._decode_share(part, max_message_bytes) for part in parts)
        )
        return [d for part in done for d in part]

    async def _decode_share(self, raws: list[Raw], max_message_bytes: int) -> list[Decoded]:
        try:
            decoded: list[Decoded] = await self._call(raws, max_message_bytes)
            return decoded
        except DecoderUnavailable as exc:
            logger.error("%s; decoding inline", exc)
            return decode_all(raws, max_message_bytes)
        except DecoderFailed as exc:
            if len(raws) == 1:
                logger.error("mail of tenant %s failed its decoder: %s", raws[0].tenant, exc)
                return [
                    _undecodable(
                        raws[0],
                        mime.content_hash(raws[0].data),
                        f"undecodable: its decoder process failed ({exc})",
                    )
                ]
            logger.error("a mail decoder failed (%s); decoding its mails one at a time", exc)
        return [d for raw in raws for d in await self._decode_share([raw], max_message_bytes)]

    async def close(self) -> None:
        starting, self._starting = self._starting, None
        if starting is not None:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        workers, self._all, self._idle = self._all, set(), []
        for worker in workers:
            await worker.close()


def main() -> None:
    """A worker: its frames on standard output, anything else the decoder prints to stderr."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    _serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    # Through the module's own name, so what it pickles names that module, not __main__.
    from switchboard.email_ingest import decoding

    decoding.main()
