"""The dead-letter stream: where a consumer parks an event it gives up on, to be replayed later.

A parked message is the original payload with the original headers, plus headers saying who
parked it, where it came from and why. Its ``Nats-Msg-Id`` is derived from the consumer and the
original stream sequence, so parking the same delivery twice (a term that never reached the
server, then a redelivery) stores it once. Replay publishes it back on its original subject under
a fresh id (JetStream would otherwise drop it as a duplicate; consumers are idempotent by the event
id inside the payload), waits for JetStream's ack, and only then deletes the parked copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from switchboard.core import events

STREAM = events.DEADLETTER_STREAM
SUBJECTS = events.STREAMS[STREAM]
SUBJECT_PREFIX = "deadletter"
# Parked events wait for an operator; a long weekend and a slow investigation must fit.
MAX_AGE_SECONDS = 90 * 24 * 3600.0
# Parking again after a lost term happens at least an ack wait later; a day covers any of ours.
DUPLICATE_WINDOW_SECONDS = 24 * 3600.0
# Room for our headers on top of an event of the largest size the event streams accept.
HEADER_ALLOWANCE = 16 * 1024
MAX_REASON_CHARS = 1000

CONSUMER_HEADER = "Sb-Dlq-Consumer"
STREAM_HEADER = "Sb-Dlq-Stream"
SUBJECT_HEADER = "Sb-Dlq-Subject"
SEQUENCE_HEADER = "Sb-Dlq-Sequence"
DELIVERIES_HEADER = "Sb-Dlq-Deliveries"
REASON_HEADER = "Sb-Dlq-Reason"
MSG_ID_HEADER = "Sb-Dlq-Msg-Id"  # the original Nats-Msg-Id
REPLAYED_FROM_HEADER = "Sb-Replayed-From"  # set on a replayed event: its dead-letter sequence
_OURS = frozenset(
    {
        CONSUMER_HEADER,
        STREAM_HEADER,
        SUBJECT_HEADER,
        SEQUENCE_HEADER,
        DELIVERIES_HEADER,
        REASON_HEADER,
        MSG_ID_HEADER,
    }
)


def configure(config: js_api.StreamConfig) -> js_api.StreamConfig:
    """Adapt an event stream's `config` to the dead-letter stream: kept longer, de-duplicated
    over a longer window, with room for our headers on top of the largest event."""
    config.duplicate_window = DUPLICATE_WINDOW_SECONDS
    config.max_age = MAX_AGE_SECONDS
    if config.max_msg_size and config.max_msg_size > 0:
        config.max_msg_size += HEADER_ALLOWANCE
    return config


def parked_subject(durable: str, subject: str) -> str:
    return f"{SUBJECT_PREFIX}.{durable}.{subject}"


def parked_msg_id(durable: str, stream: str, sequence: int) -> str:
    return f"dlq:{durable}:{stream}:{sequence}"


def _header_value(text: str) -> str:
    # A header is one line of ASCII; an exception's text may be several, in any script.
    line = " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
    return line[:MAX_REASON_CHARS]


def _original_headers(headers: dict[str, str] | None) -> dict[str, str]:
    """The headers to carry over: JetStream's control headers (Nats-Msg-Id, Nats-Expected-…)
    would change how the copy is stored, so they are left behind."""
    return {
        k: v
        for k, v in (headers or {}).items()
        if not k.lower().startswith("nats-") and k not in _OURS
    }


async def park(
    js: JetStreamContext, msg: Msg, durable: str, reason: str, timeout: float = 5.0
) -> js_api.PubAck:
    """Store `msg` in the dead-letter stream with `reason`; returns JetStream's ack (raises if
    it did not come, and then the original must not be terminated)."""
    meta = msg.metadata
    headers = _original_headers(msg.headers)
    original_id = (msg.headers or {}).get("Nats-Msg-Id")
    if original_id:
        headers[MSG_ID_HEADER] = original_id
    headers.update(
        {
            CONSUMER_HEADER: durable,
            STREAM_HEADER: meta.stream,
            SUBJECT_HEADER: msg.subject,
            SEQUENCE_HEADER: str(meta.sequence.stream),
            DELIVERIES_HEADER: str(meta.num_delivered or 1),
            REASON_HEADER: _header_value(reason) or "unknown",
            "Nats-Msg-Id": parked_msg_id(durable, meta.stream, meta.sequence.stream),
        }
    )
    return await js.publish(
        parked_subject(durable, msg.subject),
        msg.data,
        stream=STREAM,
        headers=headers,
        timeout=timeout,
    )


@dataclass(frozen=True)
class Parked:
    """One event in the dead-letter stream."""

    seq: int  # its sequence in the dead-letter stream
    consumer: str
    stream: str
    subject: str
    sequence: int  # in the original stream
    deliveries: int
    reason: str
    type_name: str
    event_id: str
    tenant: str
    parked_at: datetime | None
    headers: dict[str, str]
    data: bytes

    @classmethod
    def from_raw(cls, raw: js_api.RawStreamMsg) -> Parked:
        headers = dict(raw.headers or {})
        data = raw.data or b""
        type_name = headers.get(events.TYPE_HEADER, "")
        event_id, tenant = _identify(type_name, data)
        return cls(
            seq=raw.seq or 0,
            consumer=headers.get(CONSUMER_HEADER, ""),
            stream=headers.get(STREAM_HEADER, ""),
            subject=headers.get(SUBJECT_HEADER, ""),
            sequence=_int(headers.get(SEQUENCE_HEADER)),
            deliveries=_int(headers.get(DELIVERIES_HEADER)),
            reason=headers.get(REASON_HEADER, ""),
            type_name=type_name,
            event_id=event_id or headers.get(MSG_ID_HEADER, ""),
            tenant=tenant,
            parked_at=raw.time,
            headers=headers,
            data=data,
        )

    def as_dict(self) -> dict[str, Any]:
        """What `switchboard dlq list --json` shows (no payload: it may hold personal data)."""
        return {
            "seq": self.seq,
            "consumer": self.consumer,
            "type": self.type_name,
            "event_id": self.event_id,
            "tenant": self.tenant,
            "stream": self.stream,
            "subject": self.subject,
            "sequence": self.sequence,
            "deliveries": self.deliveries,
            "reason": self.reason,
            "parked_at": self.parked_at.isoformat() if self.parked_at else None,
        }

    def replay_headers(self) -> dict[str, str]:
        headers = _original_headers(self.headers)
        headers[REPLAYED_FROM_HEADER] = str(self.seq)
        headers["Nats-Msg-Id"] = f"{self.event_id or 'dlq'}:replay:{self.seq}"
        return headers


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0


def _identify(type_name: str, data: bytes) -> tuple[str, str]:
    """The event id and tenant inside the payload, when it can be read."""
    spec = events.spec_by_name(type_name)
    if spec is None:
        return "", ""
    try:
        event = spec.type.FromString(data)
    except DecodeError:
        return "", ""
    meta = getattr(event, "meta", None)
    return (meta.event_id, meta.tenant) if meta is not None else ("", "")


def _filter(consumer: str | None) -> str:
    return f"{SUBJECT_PREFIX}.{consumer}.>" if consumer else SUBJECTS[0]


async def parked(js: JetStreamContext, consumer: str | None = None) -> list[Parked]:
    """Every parked event (of `consumer`, if given), oldest first."""
    out: list[Parked] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(STREAM, seq, subject=_filter(consumer), next=True)
        except NotFoundError:
            return out
        out.append(Parked.from_raw(raw))
        seq = (raw.seq or seq) + 1


async def get(js: JetStreamContext, seq: int) -> Parked | None:
    if seq < 1:
        return None
    try:
        return Parked.from_raw(await js.get_msg(STREAM, seq))
    except NotFoundError:
        return None


@dataclass(frozen=True)
class Replayed:
    """What became of one replay: the original stream's new sequence, or why it failed."""

    seq: int
    parked: Parked | None
    ack: js_api.PubAck | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.ack is not None and not self.error


async def replay(
    js: JetStreamContext,
    seqs: Iterable[int] | None = None,
    consumer: str | None = None,
    timeout: float = 5.0,
) -> list[Replayed]:
    """Publish parked events back on their original subjects, then delete them from the
    dead-letter stream: the ones at `seqs`, or all (of `consumer`, if given). A parked event
    whose publish is not acknowledged stays parked."""
    if seqs is None:
        targets: list[tuple[int, Parked | None]] = [(p.seq, p) for p in await parked(js, consumer)]
    else:
        targets = [(seq, await get(js, seq)) for seq in sorted(set(seqs))]
    outcomes: list[Replayed] = []
    for seq, item in targets:
        if item is None or (consumer and item.consumer != consumer):
            outcomes.append(Replayed(seq, None, error="no such parked event"))
            continue
        if not item.subject:
            outcomes.append(Replayed(seq, item, error="it does not say where it came from"))
            continue
        try:
            ack = await js.publish(
                item.subject, item.data, headers=item.replay_headers(), timeout=timeout
            )
        except Exception as exc:
            outcomes.append(Replayed(seq, item, error=f"publish failed: {exc!r}"))
            continue
        try:
            await js.delete_msg(STREAM, seq)
        except Exception as exc:
            # Replayed, but still parked: a second replay reuses the same id, which JetStream
            # drops as a duplicate within its window, and consumers would ignore anyway.
            outcomes.append(Replayed(seq, item, ack, error=f"replayed, not deleted: {exc!r}"))
            continue
        outcomes.append(Replayed(seq, item, ack))
    return outcomes
