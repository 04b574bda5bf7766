"""Multipart mail is split by the stdlib's feed parser, without a regular expression compiled per
boundary (a mail's boundary is unique, so each compile missed the cache and cost about as much
as the rest of the parse), and with exactly the stdlib's result."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage, Message

import pytest

from switchboard.email_ingest.domain import feedparse, mime


def _multipart(i: int, boundary: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"Question {i}"
    msg["Message-ID"] = f"<multipart-{i}@example.com>"
    msg.set_content(f"Hello, the invoice {i} I received is wrong.\n")
    msg.add_alternative(f"<p>Hello, the invoice {i} I received is wrong.</p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 invoice", maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes(policy=policy.SMTP).replace(msg.get_boundary().encode(), boundary.encode())


def _shape(msg: Message) -> list[tuple[str, object, object, object]]:
    return [
        (
            p.get_content_type(),
            p.get_payload() if not p.is_multipart() else None,
            p.preamble,
            p.epilogue,
        )
        for p in msg.walk()
    ]


def _defects(msg: Message) -> list[str]:
    return [type(d).__name__ for p in msg.walk() for d in p.defects]


def test_parsing_distinct_boundaries_compiles_no_regular_expression(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled: list[object] = []
    real = re.compile

    def counting(pattern: object, flags: int = 0) -> re.Pattern[str]:
        compiled.append(pattern)
        return real(pattern, flags)  # type: ignore[call-overload,no-any-return]

    mails = [_multipart(i, f"=====boundary-{i}-x=====") for i in range(20)]
    monkeypatch.setattr(re, "compile", counting)
    parsed = [mime.parse(m) for m in mails]
    monkeypatch.undo()

    assert [m.attachments[0].filename for m in parsed] == ["a.pdf"] * 20
    assert all("invoice" in m.body for m in parsed)
    assert compiled == []


@pytest.mark.parametrize(
    "boundary",
    [
        "simple",
        "=_Part_1234.5678",
        "a+b*c?d(e)f[g]h{i}j|k^l$m.n\\o",
        "with space",
        "--leading-dashes",
        "ends-with-dashes--",
    ],
)
@pytest.mark.parametrize("linesep", ["\r\n", "\n"])
def test_multipart_structure_is_exactly_the_stdlib_parsers(boundary: str, linesep: str) -> None:
    raw = _multipart(7, boundary)
    if linesep == "\n":
        raw = raw.replace(b"\r\n", b"\n")
    # Odd boundary lines: trailing blanks, a close delimiter with blanks, a preamble and epilogue,
    # lines that only start like a boundary or only end like one.
    sep = b"--" + boundary.encode()
    nl = linesep.encode()
    raw = raw.replace(sep + nl, sep + b" \t" + nl, 1)
    raw = raw.replace(b"7 I received", b"7" + nl + sep + b"-not-a-boundary" + nl + b"I received", 1)
    raw = raw.replace(sep + b"--", b"not " + sep + nl + sep + b"--  ")
    raw += b"epilogue" + nl
    first = raw.index(sep)
    raw = raw[:first] + b"This is a preamble." + nl + raw[first:]
    expected = email.message_from_bytes(raw, policy=policy.compat32)

    parsed = feedparse.message_from_bytes(raw)

    assert _shape(parsed) == _shape(expected)
    assert len(_shape(parsed)) == 5  # mixed, alternative, plain, html, pdf
    assert _defects(parsed) == _defects(expected)
