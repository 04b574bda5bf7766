"""The IMAP client protocol fed server responses directly: how it reads large FETCH answers."""

from __future__ import annotations

import asyncio

from switchboard.email_ingest.entrypoints.imap import _Protocol, parse_fetch


class _Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


async def _fetch_answered_in_one_chunk(answer: bytes) -> list[bytes | bytearray]:
    protocol = _Protocol(asyncio.get_running_loop(), None)
    protocol.connection_made(_Transport())  # type: ignore[arg-type]
    protocol.state = "SELECTED"
    fetch = asyncio.ensure_future(protocol.fetch("1:*", "(UID BODY.PEEK[])", by_uid=True))
    await asyncio.sleep(0)
    tag = protocol.transport.sent[-1].split(b" ", 1)[0]
    protocol.data_received(answer + tag + b" OK Fetch completed.\r\n")
    response = await asyncio.wait_for(fetch, 5)
    assert response.result == "OK"
    return response.lines


async def test_thousands_of_short_fetch_lines_in_one_chunk_are_all_read() -> None:
    answer = b"".join(b"* %d FETCH (UID %d RFC822.SIZE 900)\r\n" % (i, i) for i in range(1, 5001))
    lines = await _fetch_answered_in_one_chunk(answer)
    assert parse_fetch(lines) == {i: (900, b"") for i in range(1, 5001)}


async def test_thousands_of_bodies_in_one_chunk_are_all_read_whole() -> None:
    def body(i: int) -> bytes:
        return b"Subject: %d\r\n\r\nline (one\r\n) and {3}\r\n" % i

    answer = b"".join(
        b"* %d FETCH (UID %d BODY[] {%d}\r\n%s)\r\n" % (i, i, len(body(i)), body(i))
        for i in range(1, 3001)
    )
    lines = await _fetch_answered_in_one_chunk(answer)
    assert parse_fetch(lines) == {i: (0, body(i)) for i in range(1, 3001)}
