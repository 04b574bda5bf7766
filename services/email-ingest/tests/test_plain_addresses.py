"""Plain address headers (`Name <a@b.c>`, `<a@b.c>`, `a@b.c`) are read without the stdlib's
address parser, with exactly the result the parser and header decoding give."""

from __future__ import annotations

import re
from email import message_from_string, policy
from email.message import Message

import pytest

from switchboard.email_ingest.domain import headers

VALUES = [
    "Customer 5 <customer5@example.com>",
    "customer5@example.com",
    "<customer5@example.com>",
    "Kim Min-jun <min-jun.kim+orders@mail.example.co.kr>",
    "ALL CAPS <Upper.Case@Example.COM>",
    "a_b@c-d.e",
    "Name  Two Spaces <a@b.c>",
    '"Quoted, Name" <a@b.c>',
    "Dr. Who <who@tardis.example>",
    "Name <a@b.c>, Other <d@e.f>",
    "a@b.c (comment)",
    "=?utf-8?b?6rmA66+87KSA?= <minjun@example.com>",
    "Name<a@b.c>",
    " Name <a@b.c>",
    "Name <a@b.c> ",
    "Name <a..b@c.d>",
    "Name <.a@c.d>",
    "Name <a@-c.d>",
    "Name <a@c.>",
    "no address here",
    "Name <a@b.c",
]


def _msg(value: str) -> Message:
    return message_from_string(f"From: {value}\nTo: x@y.z\n\nbody\n", policy=policy.compat32)


def _parsed(msg: Message) -> list[tuple[str, str]]:
    """`headers.addresses` through the stdlib's parser, as before the plain forms were read
    directly."""
    plain = headers._PLAIN_ADDRESS
    try:
        headers._PLAIN_ADDRESS = re.compile(r"(?!)")  # matches nothing
        return headers.addresses(msg, "from")
    finally:
        headers._PLAIN_ADDRESS = plain


@pytest.mark.parametrize("value", VALUES)
def test_a_plain_address_reads_as_the_address_parser_reads_it(value: str) -> None:
    msg = _msg(value)
    parsed = _parsed(msg)
    assert headers.addresses(msg, "from") == parsed
    if parsed:
        assert headers.first_address(msg, "from") == parsed[0]


def test_plain_from_and_to_skip_the_address_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real = headers.getaddresses

    def counting(values: list[str]) -> list[tuple[str, str]]:
        calls.append(values)
        return real(values)

    monkeypatch.setattr(headers, "getaddresses", counting)
    msg = _msg("Customer 5 <customer5@example.com>")
    assert headers.first_address(msg, "from") == ("Customer 5", "customer5@example.com")
    assert headers.addresses(msg, "to") == [("", "x@y.z")]
    assert calls == []
