"""IMAP ingest for one mailbox: catch up from the checkpoint, then wait in IDLE (re-issued before
the server's timeout) or poll, publish, and only then flag or move and advance the checkpoint.

The checkpoint (UIDVALIDITY, last UID) lives in JetStream key-value. After any downtime the
watcher fetches `UID last+1:*`; after a UIDVALIDITY change it fetches everything again, and the
ingestor's seen set (Message-ID + content hash) keeps the re-read mail from being published twice.

With several replicas, a watcher reads its mailbox only while its replica holds the mailbox's
lease (see `switchboard.email_ingest.leasing`): it is fenced, i.e. it checks the lease is still
its own before it fetches a batch and before it flags or moves mail, and stops otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aioimaplib

from switchboard.core.leases import Lease
from switchboard.email_ingest.adapters.jetstream import EmailState
from switchboard.email_ingest.config import ImapConfig, Mailbox
from switchboard.email_ingest.ingest import Incoming, Ingestor, Read
from switchboard.v1 import email_pb2

logger = logging.getLogger(__name__)

DONE_FLAG = "$Switchboard"
QUARANTINE_FLAG = "$SwitchboardQuarantined"
_FETCH = re.compile(rb"^\*?\s*\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_EXISTS = re.compile(rb"^(?:\* )?\d+ EXISTS\b")


class ImapFailure(Exception):
    pass


class LeaseLost(Exception):
    """The mailbox's lease is no longer this replica's: another replica reads it now."""


class _FetchCommand(aioimaplib.FetchCommand):
    """A FETCH that knows in constant time whether its current message item is still open.
    aioimaplib's own check re-reads the whole response so far on every line, which is quadratic
    in the number of messages a FETCH returns."""

    def __init__(self, *args: str, **kwargs: object) -> None:
        self._open = 0  # unmatched "(" of the current message item (literal data not counted)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        super().append_to_resp(line, result)
        if isinstance(line, bytes):  # literal data arrives as a bytearray and is not counted
            if self.FETCH_MESSAGE_DATA_RE.match(line):
                self._open = 0
            self._open += line.count(b"(") - line.count(b")")

    def wait_data(self) -> bool:
        return self._open != 0


class _Protocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol, with three changes.

    It counts every untagged EXISTS. aioimaplib hands one to the command it belongs to only when
    that command is synchronous (SELECT, IDLE); one that arrives during a FETCH, STORE or SEARCH,
    or between commands, it logs and drops. The watcher compares this count before and after a
    sync, so a mail announced that way is fetched at once, not at the next IDLE renewal.

    It reads the lines of a received chunk in a loop: aioimaplib recurses once per line, and a
    chunk of about a thousand short lines (a FETCH of many sizes or flags) raised RecursionError,
    which closed the connection; the reconnection fetched the same lines and failed again.

    Its FETCH commands are `_FetchCommand`s (see there)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_lost_cb: object) -> None:
        super().__init__(loop, conn_lost_cb)  # type: ignore[arg-type]
        self.exists_seen = 0

    def _untagged_response(self, line: bytes) -> object:
        if _EXISTS.match(line):
            self.exists_seen += 1
        return super()._untagged_response(line)

    def _handle_responses(
        self,
        data: bytes,
        line_handler: Callable[[bytes, aioimaplib.Command | None], aioimaplib.Command | None],
        current_cmd: aioimaplib.Command | None = None,
    ) -> None:
        # aioimaplib's own steps, one line per turn of the loop instead of one per call.
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise aioimaplib.IncompleteRead(current_cmd)
            line, separator, data = data.partition(b"\r\n")
            if not separator:
                raise aioimaplib.IncompleteRead(current_cmd, line)
            cmd = line_handler(line, current_cmd)
            begin_literal = aioimaplib.literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = aioimaplib.Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                current_cmd = cmd
            elif cmd is not None and cmd.wait_data():
                current_cmd = cmd
            else:
                current_cmd = None

    async def fetch(
        self,
        message_set: str,
        message_parts: str,
        by_uid: bool = False,
        timeout: float | None = None,
    ) -> aioimaplib.Response:
        return await self.execute(
            _FetchCommand(
                self.new_tag(),
                message_set,
                message_parts,
                prefix="UID" if by_uid else "",
                loop=self.loop,
                timeout=timeout,
            )
        )


class _Client(aioimaplib.IMAP4):
    """aioimaplib's client on the counting protocol, with the connection-lost callback for TLS
    connections too (IMAP4_SSL drops it)."""

    def create_client(
        self,
        host: str,
        port: int,
        loop: asyncio.AbstractEventLoop | None,
        conn_lost_cb: object = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


def _exists_seen(client: aioimaplib.IMAP4) -> int:
    return getattr(client.protocol, "exists_seen", 0)


@dataclass(frozen=True)
class WatchOptions:
    idle_renew_seconds: float = 600.0
    poll_seconds: float = 60.0
    stall_seconds: float = 900.0
    reconnect_max_seconds: float = 60.0
    timeout_seconds: float = 30.0
    fetch_batch: int = 100
    max_message_bytes: int = 25 * 1024 * 1024


@dataclass
class _Status:
    state: int = email_pb2.MAILBOX_STATE_CONNECTING
    reason: str = ""
    failures: int = 0
    last_ok: float = field(default_factory=time.monotonic)
    last_ok_wall: datetime = field(default_factory=lambda: datetime.now(UTC))
    uidvalidity: int = 0
    last_uid: int = 0
    ingested: int = 0
    quarantined: int = 0
    idle_renewals: int = 0
    started: float = 0.0  # time.monotonic() when this replica last started reading the mailbox


def uid_set(uids: Iterable[int]) -> str:
    """A compact IMAP sequence set: 1:3,7,9:10."""
    ordered = sorted(set(uids))
    out: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(out)


def parse_fetch(lines: list[bytes | bytearray]) -> dict[int, tuple[int, bytes]]:
    """uid -> (RFC822.SIZE or 0, literal body or b'') from a FETCH response."""
    result: dict[int, tuple[int, bytes]] = {}
    current: list[bytes] = []
    literal = b""

    def close() -> None:
        if not current:
            return
        meta = b" ".join(current)
        uid = _UID.search(meta)
        if uid:
            size = _SIZE.search(meta)
            result[int(uid.group(1))] = (int(size.group(1)) if size else 0, literal)

    for line in lines:
        if isinstance(line, bytearray):
            literal = bytes(line)
            continue
        if _FETCH.match(line):
            close()
            current, literal = [line], b""
        elif current:
            current.append(line)
    close()
    return result


class MailboxWatcher:
    def __init__(
        self, mailbox: Mailbox, ingestor: Ingestor, state: EmailState, options: WatchOptions
    ) -> None:
        self._quiet_mark = 0  # EXISTS announcements counted when the last quiet sync began
        self._stopping = False
        if mailbox.imap is None:
            raise ValueError(f"mailbox {mailbox.name} has no IMAP settings")
        self.mailbox = mailbox
        self.imap: ImapConfig = mailbox.imap
        self.ingestor = ingestor
        self.state = state
        self.options = options
        self.status = _Status()
        self.task: asyncio.Task[None] | None = None
        self._client: aioimaplib.IMAP4 | None = None
        self._lost = asyncio.Event()
        self._wake = asyncio.Event()
        # One IMAP command at a time: the next batch is fetched while this one is published.
        self._imap = asyncio.Lock()
        # The lease it reads under (None: no fencing, e.g. a unit test); `reading` is False while
        # another replica reads the mailbox, named by `replica` ("" when no one holds it yet).
        self.lease: Lease | None = None
        self.reading = False
        self.replica = ""

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self, lease: Lease | None = None) -> None:
        """Read the mailbox (under `lease`, when given) until `stop()`."""
        self.lease = lease
        self.replica = lease.replica if lease is not None else ""
        self.reading = True
        self._stopping = False
        self._wake.clear()
        self._ok(email_pb2.MAILBOX_STATE_CONNECTING)  # its stall clock starts now, not at standby
        self.status.started = self.status.last_ok
        self.task = asyncio.create_task(self.run(), name=f"imap:{self.mailbox.name}")

    def standby(self, replica: str) -> None:
        """Record that `replica` ("" when no one) reads the mailbox; this one does not."""
        self.reading = False
        self.replica = replica

    async def stop(self) -> None:
        self._stopping = True
        self.reading = False
        task = self.task
        if task is not None:
            # Cancelled again until it ends: on Python 3.11, asyncio.wait_for (which aioimaplib
            # uses for every command) can swallow a cancellation that arrives just as the command
            # completes, and the watcher would then go back to IDLE for minutes.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if not task.cancelled():
                task.exception()  # retrieved, so it is not reported as never retrieved
        await self._close()

    def snapshot(self) -> email_pb2.MailboxStatus:
        s = self.status
        healthy, reason = self.health()
        state = s.state if self.reading else email_pb2.MAILBOX_STATE_STANDBY
        status = email_pb2.MailboxStatus(
            mailbox=self.mailbox.name,
            tenant=self.mailbox.tenant,
            state=email_pb2.MAILBOX_STATE_STALLED if not healthy else state,  # type: ignore[arg-type]
            reason=reason,
            uidvalidity=s.uidvalidity,
            last_uid=s.last_uid,
            ingested=s.ingested,
            quarantined=s.quarantined,
            failures=s.failures,
            healthy=healthy,
            replica=self.replica,
        )
        status.last_ok_at.FromDatetime(s.last_ok_wall)
        return status

    def health(self) -> tuple[bool, str]:
        """(healthy, why not): unhealthy once the mailbox made no progress for stall_seconds
        while this replica reads it (another replica's mailbox is that replica's concern)."""
        if not self.reading:
            return True, ""
        idle_for = time.monotonic() - self.status.last_ok
        if idle_for > self.options.stall_seconds:
            why = self.status.reason or "no answer from the server"
            return False, (
                f"mailbox {self.mailbox.name} ({self.imap.host}:{self.imap.port}/{self.imap.folder}) "
                f"stalled for {idle_for:.0f}s: {why}"
            )
        return True, ""

    def _ok(self, state: int) -> None:
        self.status.state = state
        self.status.last_ok = time.monotonic()
        self.status.last_ok_wall = datetime.now(UTC)
        self.status.failures = 0
        self.status.reason = ""

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        while not self._stopping:
            try:
                client = await self._connect()
                uidvalidity = await self._select(client)
                await self.sync_until_quiet(client, uidvalidity)
                if "IDLE" in client.protocol.capabilities:
                    await self._idle_loop(client, uidvalidity)
                else:
                    await self._poll_loop(client, uidvalidity)
            except asyncio.CancelledError:
                raise
            except LeaseLost as exc:
                logger.warning("mailbox %s: %s; no longer reading it", self.mailbox.name, exc)
                await self._close()
                self.reading = False  # once closed: the lease loop may start it again
                return
            except Exception as exc:
                self.status.failures += 1
                self.status.state = email_pb2.MAILBOX_STATE_BACKOFF
                self.status.reason = _describe(exc)
                delay = min(
                    self.options.reconnect_max_seconds, 0.5 * 2 ** min(self.status.failures, 10)
                )
                delay *= random.uniform(0.8, 1.0)
                logger.warning(
                    "mailbox %s: %s; reconnecting in %.1fs (attempt %d)",
                    self.mailbox.name,
                    self.status.reason,
                    delay,
                    self.status.failures,
                )
                await self._close()
                await asyncio.sleep(delay)

    async def _connect(self) -> aioimaplib.IMAP4:
        self.status.state = email_pb2.MAILBOX_STATE_CONNECTING
        self._lost.clear()

        def lost(exc: Exception | None) -> None:
            self._lost.set()

        imap = self.imap
        client: aioimaplib.IMAP4 = _Client(
            imap.host,
            imap.port,
            timeout=self.options.timeout_seconds,
            conn_lost_cb=lost,
            ssl_context=ssl.create_default_context() if imap.security == "tls" else None,
        )
        self._client = client
        await client.wait_hello_from_server()
        response = await client.login(imap.username, imap.password)
        if response.result != "OK":
            raise ImapFailure(f"login as {imap.username} refused: {_text(response.lines)}")
        return client

    async def _select(self, client: aioimaplib.IMAP4) -> int:
        if self.imap.after_ingest == "move":
            await client.create(self.imap.move_to)  # NO when it exists: fine
        response = await client.select(self.imap.folder)
        if response.result != "OK":
            raise ImapFailure(f"SELECT {self.imap.folder} refused: {_text(response.lines)}")
        for line in response.lines:
            match = _UIDVALIDITY.search(bytes(line))
            if match:
                return int(match.group(1))
        raise ImapFailure(f"SELECT {self.imap.folder} gave no UIDVALIDITY")

    async def _close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(client.logout(), 2)
        except Exception:
            pass
        transport = getattr(client.protocol, "transport", None)
        if transport is not None:
            transport.close()

    async def _idle_loop(self, client: aioimaplib.IMAP4, uidvalidity: int) -> None:
        while not self._stopping:
            idle = await client.idle_start(timeout=self.options.idle_renew_seconds)
            self._ok(email_pb2.MAILBOX_STATE_IDLE)
            if _exists_seen(client) != self._quiet_mark:
                # Announced after the last sync began (possibly between commands, where nothing
                # else would notice it): sync again rather than wait for IDLE to repeat it.
                client.idle_done()
            else:
                await self._wait_in_idle(client)
            await asyncio.wait_for(idle, self.options.timeout_seconds)
            await self.sync_until_quiet(client, uidvalidity)

    async def _wait_in_idle(self, client: aioimaplib.IMAP4) -> None:
        """Wait in IDLE until new mail is announced, a wake-up, or the renewal time; end IDLE."""
        while client.has_pending_idle():
            push = asyncio.ensure_future(
                client.wait_server_push(self.options.idle_renew_seconds + 5)
            )
            lost = asyncio.ensure_future(self._lost.wait())
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                done, _ = await asyncio.wait(
                    {push, lost, wake}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                # Also when this is cancelled (the service stopping): a wait left running would
                # end later with nobody to take its outcome.
                for p in (push, lost, wake):
                    if not p.done():
                        p.cancel()
            if lost in done:
                raise ImapFailure("connection lost during IDLE")
            if wake in done:
                self._wake.clear()
                client.idle_done()
                break
            lines = push.result()
            self._ok(email_pb2.MAILBOX_STATE_IDLE)
            if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                self.status.idle_renewals += 1
                client.idle_done()  # re-issue IDLE before the server's timeout
                break
            if any(b"EXISTS" in bytes(x) for x in lines):
                client.idle_done()
                break

    async def _poll_loop(self, client: aioimaplib.IMAP4, uidvalidity: int) -> None:
        self.status.state = email_pb2.MAILBOX_STATE_POLLING
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self.options.poll_seconds)
                self._wake.clear()
            except TimeoutError:
                pass
            response = await client.noop()
            if response.result != "OK":
                raise ImapFailure(f"NOOP failed: {_text(response.lines)}")
            await self.sync(client, uidvalidity)
            self._ok(email_pb2.MAILBOX_STATE_POLLING)

    def _still_held(self) -> None:
        """Raise LeaseLost unless the lease was renewed recently enough to be ours still (no
        I/O: before the checkpoint moves)."""
        if self.lease is not None and (self._stopping or not self.lease.fresh()):
            raise LeaseLost(f"lease {self.lease.key} not renewed in time")

    async def _fence(self) -> None:
        """Raise LeaseLost unless the lease still names this replica at the revision it last
        wrote: checked before a batch is fetched and before it is flagged or moved."""
        if self.lease is not None and (self._stopping or not await self.lease.check()):
            raise LeaseLost(f"lease {self.lease.key} is no longer ours")

    def wake(self) -> None:
        """Check the mailbox now (e.g. after the NATS connection came back)."""
        self._wake.set()

    # ---- catch-up ------------------------------------------------------------------------------

    async def sync_until_quiet(self, client: aioimaplib.IMAP4, uidvalidity: int) -> None:
        """Sync until a pass finds nothing new and the server announced nothing meanwhile: mail
        that arrives during a sync is then either fetched or announced in IDLE, never stranded
        until the next IDLE renewal."""
        for _ in range(100):
            mark = _exists_seen(client)
            new = await self.sync(client, uidvalidity)
            if not new and _exists_seen(client) == mark:
                self._quiet_mark = mark
                return
        self._quiet_mark = _exists_seen(client)

    async def sync(self, client: aioimaplib.IMAP4, uidvalidity: int) -> int:
        """Publish every mail after the checkpoint; return how many were new."""
        name = self.mailbox.name
        checkpoint = await self.state.checkpoint(name)
        start, previous = 1, 0
        if checkpoint is not None and checkpoint.uidvalidity == uidvalidity:
            start = checkpoint.last_uid + 1
            previous = checkpoint.previous_uidvalidity
        elif checkpoint is not None:
            previous = checkpoint.uidvalidity
            logger.warning(
                "mailbox %s: UIDVALIDITY changed from %d to %d; re-reading the whole folder "
                "(mail already published is recognised by Message-ID and content hash)",
                name,
                checkpoint.uidvalidity,
                uidvalidity,
            )
        self.status.uidvalidity = uidvalidity
        self.status.state = email_pb2.MAILBOX_STATE_FETCHING
        response = await client.uid("fetch", f"{start}:*", "(UID RFC822.SIZE)")
        if response.result != "OK":
            raise ImapFailure(f"UID FETCH {start}:* failed: {_text(response.lines)}")
        # "n:*" always includes the highest UID, even below n: keep only the new ones.
        sizes = {
            uid: size for uid, (size, _) in parse_fetch(response.lines).items() if uid >= start
        }
        uids = sorted(sizes)
        new = 0
        if not uids and (checkpoint is None or checkpoint.uidvalidity != uidvalidity):
            self._still_held()
            await self.state.save_checkpoint(name, uidvalidity, start - 1, previous)
        chunks = [
            uids[i : i + self.options.fetch_batch]
            for i in range(0, len(uids), self.options.fetch_batch)
        ]
        # Batch n+1 is fetched and decoded while batch n is published, acknowledged and
        # checkpointed; the batches are still published, acknowledged and checkpointed in order.
        ahead: asyncio.Task[list[Read]] | None = None
        try:
            for n, chunk in enumerate(chunks):
                if ahead is None:
                    ahead = asyncio.create_task(self._fetch(client, uidvalidity, chunk, sizes))
                reads = await ahead
                ahead = None
                if n + 1 < len(chunks):
                    ahead = asyncio.create_task(
                        self._fetch(client, uidvalidity, chunks[n + 1], sizes)
                    )
                new += await self._ingest_chunk(client, reads)
                self._still_held()
                await self.state.save_checkpoint(name, uidvalidity, chunk[-1], previous)
                self.status.last_uid = chunk[-1]
                self._ok(email_pb2.MAILBOX_STATE_FETCHING)
        finally:
            if ahead is not None:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
        if checkpoint is not None and checkpoint.uidvalidity == uidvalidity:
            self.status.last_uid = max(self.status.last_uid, checkpoint.last_uid)
        self._ok(email_pb2.MAILBOX_STATE_FETCHING)
        return new

    async def _fetch(
        self, client: aioimaplib.IMAP4, uidvalidity: int, chunk: list[int], sizes: dict[int, int]
    ) -> list[Read]:
        """Fetch a batch and decode it (no event published, nothing marked)."""
        await self._fence()  # not one more batch fetched once another replica reads it
        async with self._imap:
            batch = await self._fetch_bodies(client, uidvalidity, chunk, sizes)
        return await self.ingestor.decode(batch)

    async def _fetch_bodies(
        self, client: aioimaplib.IMAP4, uidvalidity: int, chunk: list[int], sizes: dict[int, int]
    ) -> list[Incoming]:
        limit = self.options.max_message_bytes
        small = [u for u in chunk if sizes[u] <= limit]
        big = [u for u in chunk if sizes[u] > limit]
        bodies: dict[int, bytes] = {}
        if small:
            response = await client.uid("fetch", uid_set(small), "(UID BODY.PEEK[])")
            if response.result != "OK":
                raise ImapFailure(f"UID FETCH bodies failed: {_text(response.lines)}")
            bodies.update({u: body for u, (_, body) in parse_fetch(response.lines).items()})
        if big:
            # Over the limit: only the header is read; the mail stays in the folder, quarantined.
            response = await client.uid("fetch", uid_set(big), "(UID BODY.PEEK[HEADER])")
            if response.result != "OK":
                raise ImapFailure(f"UID FETCH headers failed: {_text(response.lines)}")
            bodies.update({u: body for u, (_, body) in parse_fetch(response.lines).items()})
        batch = []
        for uid in chunk:
            if uid not in bodies:
                continue  # expunged between the two fetches
            origin = email_pb2.EmailOrigin(
                intake=email_pb2.EMAIL_INTAKE_IMAP,
                mailbox=self.mailbox.name,
                uidvalidity=uidvalidity,
                uid=uid,
            )
            batch.append(Incoming(bodies[uid], self.mailbox, origin, size=sizes[uid]))
        return batch

    async def _ingest_chunk(self, client: aioimaplib.IMAP4, reads: list[Read]) -> int:
        # Returns once JetStream has stored every event of the batch.
        prepared = await self.ingestor.ingest_decoded(reads)
        quarantined = [p.incoming.origin.uid for p in prepared if p.quarantined and not p.duplicate]
        done = [p.incoming.origin.uid for p in prepared if not p.quarantined]
        kept = [p.incoming.origin.uid for p in prepared if p.quarantined]
        await self._fence()
        async with self._imap:
            await self._acknowledge(client, done, kept)
        self.status.ingested += sum(1 for p in prepared if not p.duplicate and not p.quarantined)
        self.status.quarantined += len(quarantined)
        return sum(1 for p in prepared if not p.duplicate)

    async def _acknowledge(
        self, client: aioimaplib.IMAP4, done: list[int], quarantined: list[int]
    ) -> None:
        """Mark mail on the server, only after its events are stored."""
        if quarantined:
            await client.uid("store", uid_set(quarantined), "+FLAGS", f"({QUARANTINE_FLAG})")
        if not done or self.imap.after_ingest == "none":
            return
        uids = uid_set(done)
        if self.imap.after_ingest == "flag":
            response = await client.uid("store", uids, "+FLAGS", f"(\\Seen {DONE_FLAG})")
        elif "MOVE" in client.protocol.capabilities:
            response = await client.uid("move", uids, self.imap.move_to)
        else:
            response = await client.uid("copy", uids, self.imap.move_to)
            if response.result == "OK":
                await client.uid("store", uids, "+FLAGS", "(\\Deleted)")
                response = await client.uid("expunge", uids)
        if response.result != "OK":
            # The events are stored and the mail is in the seen set: a failed flag only means the
            # next catch-up reads it again and skips it.
            logger.warning(
                "mailbox %s: marking %s failed: %s", self.mailbox.name, uids, _text(response.lines)
            )


def _text(lines: list[bytes]) -> str:
    return " ".join(bytes(x).decode("utf-8", "replace") for x in lines[-2:])[:300]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused ({exc})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
