"""Where the chat keeps its conversations: which visitor has which contact, who the agent is,
the receipts, and the history.

``JetStreamConversations`` is the production store: conversation records in a JetStream KV
bucket (updated with compare-and-set, so replicas never overwrite each other) and each
contact's messages, in order, on its own subject of a history stream. A restarted or reloaded
replica, and every other replica, sees the same conversations. ``InMemoryConversations`` is the
same contract in one process, for unit tests.

A replica keeps the records it has read, and which visitors have no contact, and a watch on the
bucket (an ordered consumer of the changes' headers only) drops what it kept of a key as soon as
any replica changes, ends, discards or erases it: a customer's message in an open conversation
reads no key at all, nor does a first message after the widget connected. What this replica
writes it keeps at once, with the revision written; a read or write during which the watch
announced a newer revision keeps nothing. On a reconnection to NATS everything kept is dropped
(changes made meanwhile did not reach the watch); a watch that misses its heartbeats starts
again from the last change it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from nats.js import api as js_api
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, KeyWrongLastSequenceError, NotFoundError

from switchboard.chat.domain.model import ChatMessage, Conversation
from switchboard.core import stores
from switchboard.core.acks import AckPublisher

logger = logging.getLogger(__name__)

Mutation = Callable[[Conversation], None]

KV_BUCKET = "chat_conversations"
HISTORY_STREAM = "CHAT_HISTORY"
HISTORY_SUBJECTS = "chat.history.>"
# A redelivered MessageAdded is de-duplicated by JetStream within this window (and by id after).
DEDUPE_WINDOW_SECONDS = 24 * 3600
HISTORY_MAX_AGE_SECONDS = 90 * 24 * 3600
# How many visitors' open contacts a replica remembers (a forgotten one costs one more read).
OPEN_HINTS = 100_000
# How many conversation records a replica keeps (a forgotten one costs one more read).
KEPT_RECORDS = 100_000
# A revision above any a record has (a change whose revision is not known is newer).
NEWEST = 2**63
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for an expected last sequence not met
# A contact id that can be one token of a key: others (another channel's) are no chat contact.
_KEY_TOKEN = re.compile(r"^[-_=a-zA-Z0-9]+$")


def could_be_chat(contact_id: str) -> bool:
    """Whether `contact_id` can name a chat contact (one token of a key): any other id (another
    channel's, or a client's wildcard) is looked up nowhere."""
    return bool(_KEY_TOKEN.match(contact_id))


class ConversationStore(Protocol):
    """Every method returns snapshots: mutate through the store, never through a result."""

    async def open_for_visitor(self, tenant: str, visitor_id: str) -> Conversation | None:
        """The visitor's contact that has not ended, if any (without its messages)."""
        ...

    async def add(self, conversation: Conversation) -> None:
        """Record a new conversation (it becomes the visitor's open one)."""
        ...

    async def discard(self, tenant: str, contact_id: str) -> None:
        """Forget a conversation whose creation could not be published."""
        ...

    async def get(self, tenant: str, contact_id: str) -> Conversation | None:
        """The conversation's record (without its messages; see `history`)."""
        ...

    async def append(
        self,
        tenant: str,
        contact_id: str,
        message: ChatMessage,
        conversation: Conversation | None = None,
    ) -> ChatMessage | None:
        """Store `message` (returned with its seq); None if the contact is unknown or the id known.
        `conversation`, the contact's record just read by the caller, spares reading it again."""
        ...

    async def history(self, tenant: str, contact_id: str, since_seq: int = 0) -> list[ChatMessage]:
        """The contact's messages after `since_seq`, in the order they were stored."""
        ...

    async def update(self, tenant: str, contact_id: str, mutate: Mutation) -> Conversation | None:
        """Apply `mutate` to the record atomically; None if the contact is unknown."""
        ...

    async def end(self, tenant: str, contact_id: str) -> Conversation | None:
        """Mark ended and detach from the visitor (their next message starts a new contact);
        None if unknown or already ended."""
        ...

    async def forget(self, tenant: str, contact_ids: Iterable[str]) -> int:
        """Erase the records of `contact_ids` (an erased customer's), and their visitors'
        pointers to them, with every earlier revision; the number of records there were.
        Forgetting again, or a contact never chatted, is a no-op."""
        ...


def _snapshot(conversation: Conversation) -> Conversation:
    return dataclasses.replace(
        conversation,
        messages=[],
        status=dict(conversation.status) if conversation.status else None,
        receipts={k: dict(v) for k, v in conversation.receipts.items()},
    )


class InMemoryConversations:
    """A ConversationStore in this process's memory (one replica, lost on restart)."""

    def __init__(self, max_history: int = 1000) -> None:
        self._by_contact: dict[tuple[str, str], Conversation] = {}
        self._messages: dict[tuple[str, str], list[ChatMessage]] = {}
        self._open: dict[tuple[str, str], str] = {}  # (tenant, visitor_id) -> contact_id
        self._seq = 0
        self._max_history = max_history

    async def open_for_visitor(self, tenant: str, visitor_id: str) -> Conversation | None:
        contact_id = self._open.get((tenant, visitor_id))
        return None if contact_id is None else await self.get(tenant, contact_id)

    async def add(self, conversation: Conversation) -> None:
        key = (conversation.tenant, conversation.contact_id)
        self._by_contact[key] = _snapshot(conversation)
        self._messages[key] = []
        self._open[(conversation.tenant, conversation.visitor_id)] = conversation.contact_id

    async def discard(self, tenant: str, contact_id: str) -> None:
        conversation = self._by_contact.pop((tenant, contact_id), None)
        self._messages.pop((tenant, contact_id), None)
        if conversation is not None:
            visitor = (tenant, conversation.visitor_id)
            if self._open.get(visitor) == contact_id:
                del self._open[visitor]

    async def get(self, tenant: str, contact_id: str) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        return _snapshot(conversation) if conversation else None

    async def append(
        self,
        tenant: str,
        contact_id: str,
        message: ChatMessage,
        conversation: Conversation | None = None,
    ) -> ChatMessage | None:
        messages = self._messages.get((tenant, contact_id))
        if messages is None or any(m.message_id == message.message_id for m in messages):
            return None
        self._seq += 1
        stored = dataclasses.replace(message, seq=self._seq)
        messages.append(stored)
        if len(messages) > self._max_history:
            del messages[: len(messages) - self._max_history]
        return stored

    async def history(self, tenant: str, contact_id: str, since_seq: int = 0) -> list[ChatMessage]:
        return [m for m in self._messages.get((tenant, contact_id), []) if m.seq > since_seq]

    async def update(self, tenant: str, contact_id: str, mutate: Mutation) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        if conversation is None:
            return None
        mutate(conversation)
        return _snapshot(conversation)

    async def end(self, tenant: str, contact_id: str) -> Conversation | None:
        conversation = self._by_contact.get((tenant, contact_id))
        if conversation is None or conversation.ended:
            return None
        conversation.ended = True
        visitor = (tenant, conversation.visitor_id)
        if self._open.get(visitor) == contact_id:
            del self._open[visitor]
        return _snapshot(conversation)

    async def forget(self, tenant: str, contact_ids: Iterable[str]) -> int:
        forgotten = 0
        for contact_id in dict.fromkeys(contact_ids):
            if (tenant, contact_id) in self._by_contact:
                await self.discard(tenant, contact_id)
                forgotten += 1
        return forgotten


def _ckey(tenant: str, contact_id: str) -> str:
    return f"c.{tenant}.{contact_id}"


def _vkey(tenant: str, visitor_id: str) -> str:
    return f"v.{tenant}.{visitor_id}"


def _subject(tenant: str, contact_id: str) -> str:
    return f"chat.history.{tenant}.{contact_id}"


class _Read:
    """A read or write of a record in flight: the latest revision of the record that the watch
    announced meanwhile."""

    latest = 0


class JetStreamConversations:
    """A ConversationStore every replica shares, that survives restarts (JetStream KV + stream)."""

    def __init__(self, js: JetStreamContext, kv: stores.KeyValueBucket) -> None:
        self.js = js
        self.kv = kv
        # Where the bucket's keys are written and watched ($KV.<bucket>.<key>).
        self._kv_prefix: str = getattr(kv, "_pre", f"$KV.{KV_BUCKET}.")
        # History appends go out pipelined, their acks awaited on one reply subscription.
        nc = getattr(js, "_nc", None)
        self._acks = AckPublisher(nc) if nc is not None else None
        # Records read here, kept while the watch says nobody changed them (see `watch`).
        self._kept: OrderedDict[str, tuple[Conversation, int]] = OrderedDict()  # and revision
        self._absent: OrderedDict[str, None] = OrderedDict()  # visitors' pointers not there
        self._reading: dict[str, set[_Read]] = {}
        self._watch: Any = None
        self._prefix_len = 0
        self._reconnects = 0
        # Each visitor's open contact as last read here: a hint only, checked against the
        # contact's own record at every use (an ended, erased or discarded one sends us back to
        # the visitor's pointer), so a customer's message reads one key, not two.
        self._open_hint: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    async def open(cls, js: JetStreamContext, replicas: int = 1) -> JetStreamConversations:
        """Create (or bind to) the bucket and the history stream, with `replicas` copies."""
        kv = await stores.key_value(js, KV_BUCKET, replicas=replicas)
        config = js_api.StreamConfig(
            name=HISTORY_STREAM,
            subjects=[HISTORY_SUBJECTS],
            storage=js_api.StorageType.FILE,
            duplicate_window=DEDUPE_WINDOW_SECONDS,
            max_age=HISTORY_MAX_AGE_SECONDS,
            num_replicas=replicas,
        )
        try:
            await js.stream_info(HISTORY_STREAM)
        except NotFoundError:
            await js.add_stream(config)
        store = cls(js, kv)
        await store.watch()
        return store

    async def watch(self) -> None:
        """Keep the records read from now on, each until a change to it arrives."""
        if self._watch is not None:
            return
        prefix = self._kv_prefix
        self._prefix_len = len(prefix)
        self._reconnects = self._connection_reconnects()
        self._watch = await self.js.subscribe(
            f"{prefix}>",
            stream=f"KV_{KV_BUCKET}",
            cb=self._changed,
            ordered_consumer=True,
            deliver_policy=js_api.DeliverPolicy.NEW,
            headers_only=True,
        )

    async def close(self) -> None:
        """Stop watching (and keeping records)."""
        watch, self._watch = self._watch, None
        self._kept.clear()
        self._absent.clear()
        if watch is not None:
            try:
                await watch.unsubscribe()
            except Exception:  # the connection is closing: the consumer goes with it
                pass
        if self._acks is not None:
            with contextlib.suppress(Exception):  # as the watch
                await self._acks.close()

    def _connection_reconnects(self) -> int:
        nc = getattr(self.js, "_nc", None)
        return int(nc.stats.get("reconnects", 0)) if nc is not None else 0

    async def _changed(self, msg: Any) -> None:
        try:
            revision = int(msg.metadata.sequence.stream)
        except Exception:  # no revision to compare: the change is newer than anything kept
            revision = NEWEST
        self._drop(msg.subject[self._prefix_len :], revision)

    def _drop(self, key: str, revision: int = NEWEST) -> None:
        """Forget the kept record of `key` if it is older than `revision` (a change made here or
        elsewhere), and tell the reads and writes of it in flight."""
        kept = self._kept.get(key)
        if kept is not None and kept[1] < revision:
            del self._kept[key]
        self._absent.pop(key, None)
        for read in self._reading.get(key, ()):
            read.latest = max(read.latest, revision)

    def _begin(self, key: str) -> _Read:
        read = _Read()
        self._reading.setdefault(key, set()).add(read)
        return read

    def _end(self, key: str, read: _Read) -> None:
        reads = self._reading[key]
        reads.discard(read)
        if not reads:
            del self._reading[key]

    def _keep(self, key: str, conversation: Conversation, revision: int, read: _Read) -> None:
        """Keep `conversation`, the record at `revision`, unless a newer one was announced
        while it was read or written."""
        if read.latest > revision or not self._keeping():
            self._kept.pop(key, None)
            return
        self._kept[key] = (_snapshot(conversation), revision)
        self._kept.move_to_end(key)
        while len(self._kept) > KEPT_RECORDS:
            self._kept.popitem(last=False)

    def _keeping(self) -> bool:
        """Whether kept records are good: watched, connected, and no reconnection since (a
        change made while this replica was away from NATS would not have reached it)."""
        if self._watch is None:
            return False
        nc = getattr(self.js, "_nc", None)
        reconnects = self._connection_reconnects()
        if nc is None or not nc.is_connected or reconnects != self._reconnects:
            self._kept.clear()
            self._absent.clear()
            self._reconnects = reconnects
            return False
        return True

    async def _read(self, key: str) -> tuple[dict[str, object], int] | None:
        entry = await stores.entry(self.kv, key)
        if entry is None or entry.value is None:
            return None
        return json.loads(entry.value), int(entry.revision or 0)

    async def open_for_visitor(self, tenant: str, visitor_id: str) -> Conversation | None:
        visitor = (tenant, visitor_id)
        hinted = self._open_hint.get(visitor)
        if hinted is not None:
            conversation = await self.get(tenant, hinted)
            if (
                conversation is not None
                and not conversation.ended
                and conversation.visitor_id == visitor_id
            ):
                self._open_hint.move_to_end(visitor)
                return conversation
            self._open_hint.pop(visitor, None)
        found = await self._pointer(_vkey(tenant, visitor_id))
        if found is None:
            return None
        conversation = await self.get(tenant, str(found[0]["contact_id"]))
        if conversation is None or conversation.ended:
            return None
        self._hint(visitor, conversation.contact_id)
        return conversation

    async def _pointer(self, key: str) -> tuple[dict[str, object], int] | None:
        """A visitor's pointer to their open contact; one found not there is kept so until the
        watch announces a change to it."""
        if not self._keeping():
            return await self._read(key)
        if key in self._absent:
            self._absent.move_to_end(key)
            return None
        read = self._begin(key)
        try:
            found = await self._read(key)
            if found is None and read.latest == 0 and self._keeping():
                self._absent[key] = None
                while len(self._absent) > KEPT_RECORDS:
                    self._absent.popitem(last=False)
        finally:
            self._end(key, read)
        return found

    def _hint(self, visitor: tuple[str, str], contact_id: str) -> None:
        self._open_hint[visitor] = contact_id
        self._open_hint.move_to_end(visitor)
        while len(self._open_hint) > OPEN_HINTS:
            self._open_hint.popitem(last=False)

    async def add(self, conversation: Conversation) -> None:
        t, c = conversation.tenant, conversation.contact_id
        key = _ckey(t, c)
        self._drop(_vkey(t, conversation.visitor_id))
        read = self._begin(key)
        try:
            # The record and the visitor's pointer together: a pointer to a record not there
            # yet is no open contact (and a later contact overwrites it).
            record = json.dumps(conversation.to_record()).encode()
            pointer = json.dumps({"contact_id": c}).encode()
            revision = await self._put_both(
                (key, record), (_vkey(t, conversation.visitor_id), pointer)
            )
            self._keep(key, conversation, int(revision), read)
            self._drop(_vkey(t, conversation.visitor_id))
        except BaseException:
            self._drop(key)
            raise
        finally:
            self._end(key, read)
        self._hint((t, conversation.visitor_id), c)

    async def _put_both(self, first: tuple[str, bytes], second: tuple[str, bytes]) -> int:
        """Put two keys, pipelined, and return the first's revision once both are stored: one
        wait on the bus's pipelined acks where two key-value puts would each make a request of
        their own (a conversation's first message waits for this before it is shown)."""
        if self._acks is None:
            revision, _ = await asyncio.gather(self.kv.put(*first), self.kv.put(*second))
            return int(revision)
        prefix = self._kv_prefix
        acks = await self._acks.publish_all(
            [(prefix + first[0], first[1], None), (prefix + second[0], second[1], None)]
        )
        return int(acks[0].seq)

    async def discard(self, tenant: str, contact_id: str) -> None:
        conversation = await self.get(tenant, contact_id)
        await self.kv.delete(_ckey(tenant, contact_id))
        self._drop(_ckey(tenant, contact_id))
        if conversation is not None:
            await self._detach(tenant, conversation.visitor_id, contact_id)

    async def _detach(self, tenant: str, visitor_id: str, contact_id: str) -> None:
        found = await self._read(_vkey(tenant, visitor_id))
        if found is not None and found[0].get("contact_id") == contact_id:
            try:
                await self.kv.delete(_vkey(tenant, visitor_id), last=found[1])
            except BadRequestError as exc:
                # The visitor started another contact meanwhile. nats.py reports a delete's stale
                # `last` as a plain BadRequestError (10071), not as KeyWrongLastSequenceError.
                if getattr(exc, "err_code", None) != WRONG_LAST_SEQUENCE:
                    raise

    async def get(self, tenant: str, contact_id: str) -> Conversation | None:
        key = _ckey(tenant, contact_id)
        if not self._keeping():
            found = await self._read(key)
            return None if found is None else Conversation.from_record(found[0])
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return _snapshot(kept[0])
        read = self._begin(key)
        try:
            found = await self._read(key)
            if found is None:
                return None
            conversation = Conversation.from_record(found[0])
            self._keep(key, conversation, found[1], read)
        finally:
            self._end(key, read)
        return conversation

    async def append(
        self,
        tenant: str,
        contact_id: str,
        message: ChatMessage,
        conversation: Conversation | None = None,
    ) -> ChatMessage | None:
        if conversation is None and await self._read(_ckey(tenant, contact_id)) is None:
            return None
        subject = _subject(tenant, contact_id)
        data = json.dumps(message.to_record()).encode()
        headers = {
            "Nats-Msg-Id": f"{contact_id}:{message.message_id}",
            "Nats-Expected-Stream": HISTORY_STREAM,  # as js.publish(stream=...) sends it
        }
        if self._acks is None:
            ack = await self.js.publish(subject, data, headers=headers)
        else:
            ack = await (await self._acks.publish(subject, data, headers))
        if ack.duplicate:
            return None
        return dataclasses.replace(message, seq=int(ack.seq))

    async def history(self, tenant: str, contact_id: str, since_seq: int = 0) -> list[ChatMessage]:
        msgs = await stores.subject_messages(
            self.js, HISTORY_STREAM, _subject(tenant, contact_id), since_seq
        )
        return [
            ChatMessage.from_record(json.loads(msg.data), msg.metadata.sequence.stream)
            for msg in msgs
        ]

    async def update(self, tenant: str, contact_id: str, mutate: Mutation) -> Conversation | None:
        key = _ckey(tenant, contact_id)
        read = self._begin(key)
        try:
            for attempt in range(20):
                # The kept record first (the compare-and-set refuses it if it is not the last
                # revision any more); then the record as read.
                kept = self._kept.get(key) if attempt == 0 and self._keeping() else None
                if kept is not None:
                    conversation, last = _snapshot(kept[0]), kept[1]
                else:
                    found = await self._read(key)
                    if found is None:
                        self._drop(key)
                        return None
                    conversation, last = Conversation.from_record(found[0]), found[1]
                mutate(conversation)
                try:
                    revision = await self.kv.update(
                        key, json.dumps(conversation.to_record()).encode(), last=last
                    )
                except KeyWrongLastSequenceError:
                    self._drop(key)
                    await asyncio.sleep(0)  # another replica changed it: read again and retry
                    continue
                except BaseException:
                    self._drop(key)  # stored or not: read it again next time
                    raise
                self._keep(key, conversation, int(revision), read)
                return conversation
        finally:
            self._end(key, read)
        raise RuntimeError(f"conversation {contact_id}: too many concurrent updates")

    async def end(self, tenant: str, contact_id: str) -> Conversation | None:
        was_open = False

        def close(c: Conversation) -> None:
            nonlocal was_open
            was_open = not c.ended
            c.ended = True

        conversation = await self.update(tenant, contact_id, close)
        if conversation is None or not was_open:
            return None
        await self._detach(tenant, conversation.visitor_id, contact_id)
        return conversation

    async def forget(self, tenant: str, contact_ids: Iterable[str]) -> int:
        """Purge each record (its visitor's pointer first, so a retry after a failure still
        finds the visitor in the record). A purge removes every revision of the key from the
        stream; a marker naming only the key stays. Every later `update` of the contact finds
        nothing (compare-and-set), so no handler writes the record back."""
        forgotten = 0
        for contact_id in dict.fromkeys(contact_ids):
            if not _KEY_TOKEN.match(contact_id):
                continue
            key = _ckey(tenant, contact_id)
            found = await self._read(key)
            if found is None:
                continue
            visitor = str(found[0].get("visitor_id") or "")
            if _KEY_TOKEN.match(visitor):
                pointer = await self._read(_vkey(tenant, visitor))
                if pointer is not None and pointer[0].get("contact_id") == contact_id:
                    await self.kv.purge(_vkey(tenant, visitor))
            await self.kv.purge(key)
            self._drop(key)
            forgotten += 1
        return forgotten
