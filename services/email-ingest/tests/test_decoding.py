"""Decoding in worker processes: the same result as decoding inline (the malformed corpus too),
no mail lost when a worker dies, and a mail its worker cannot answer for is quarantined, not
retried forever and not taken for the batch's."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from switchboard.email_ingest.decoding import Decoder, Raw, decode_all
from switchboard.email_ingest.domain import threads

CORPUS = sorted((Path(__file__).parent / "fixtures" / "malformed").glob("*.eml"))
LIMIT = 25 * 1024 * 1024


def _raws() -> list[Raw]:
    plain = [
        (
            f"From: Customer {i} <c{i}@example.com>\r\nTo: support@example.com\r\n"
            f"Subject: Question {i}\r\nMessage-ID: <dec-{i}@example.com>\r\n\r\nBody {i}\r\n"
        ).encode()
        for i in range(5)
    ]
    return [Raw(data, len(data), "demo") for data in plain + [p.read_bytes() for p in CORPUS]]


@pytest.fixture
async def decoder():
    decoder = Decoder(workers=2)
    yield decoder
    await decoder.close()


async def test_workers_decode_as_inline_does(decoder: Decoder) -> None:
    raws = _raws()
    assert len(raws) > 20  # the malformed corpus is there
    inline = decode_all(raws, LIMIT)
    assert await decoder.decode(raws, LIMIT) == inline
    # An oversize mail is named with its size and quarantined, in a worker too.
    big = Raw(raws[0].data, LIMIT + 1, "demo")
    (decoded,) = await decoder.decode([big], LIMIT)
    assert decoded == decode_all([big], LIMIT)[0]
    assert decoded.quarantine.startswith(f"message of {LIMIT + 1} bytes exceeds")


async def test_a_worker_killed_between_batches_loses_no_mail(decoder: Decoder) -> None:
    raws = _raws()
    decoder.start()
    assert decoder._starting is not None
    await decoder._starting
    assert len(decoder._all) == 2
    for worker in list(decoder._all):
        os.kill(worker.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(worker.proc.wait)
    decoded = await decoder.decode(raws, LIMIT)
    assert decoded == decode_all(raws, LIMIT)
    assert not any(d.quarantine.startswith("undecodable: its decoder") for d in decoded)
    # The workers were replaced: the next batch goes through in one share a worker again.
    assert await decoder.decode(raws[:3], LIMIT) == decode_all(raws[:3], LIMIT)


async def test_a_mail_with_no_answer_in_time_is_quarantined_alone() -> None:
    raws = _raws()[:3]
    decoder = Decoder(workers=1, timeout=0)  # no worker answers in no time
    try:
        decoded = await decoder.decode(raws, LIMIT)
    finally:
        await decoder.close()
    assert [d.raw_hash for d in decoded] == [d.raw_hash for d in decode_all(raws, LIMIT)]
    for d in decoded:
        assert d.quarantine == "undecodable: its decoder process failed (no answer within 0s)"
        # Named by its bytes alone, as any undecodable mail: fetched again, it is recognised.
        assert d.key == threads.key("seen", "demo", "", d.raw_hash)


async def test_inline_without_workers() -> None:
    raws = _raws()
    decoder = Decoder(workers=0)
    assert await decoder.decode(raws, LIMIT) == decode_all(raws, LIMIT)
    assert not decoder._all  # no process started


async def test_workers_that_cannot_start_leave_decoding_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # exits before it is ready
    raws = _raws()[:4]
    decoder = Decoder(workers=2)
    try:
        decoded = await decoder.decode(raws, LIMIT)
    finally:
        await decoder.close()
    assert decoded == decode_all(raws, LIMIT)  # nothing quarantined for it
    assert not decoder._all
