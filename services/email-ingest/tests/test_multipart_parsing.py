"""Multipart mail is split by the stdlib's feed parser, without a regular expression compiled per
boundary (a mail's boundary is unique, so each compile missed the cache and cost about as much
as the rest of the parse), and with exactly the stdlib's result."""

from __future__ import annotations

import email
import pathlib
import re
from email import policy
from email.message import EmailMessage, Message

import pytest

from switchboard.email_ingest.domain import feedparse, headers, mime


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


# ---- header look-ups through the index ---------------------------------------------------------

_FIXTURES = sorted((pathlib.Path(__file__).parent / "fixtures" / "malformed").glob("*.eml"))
_ASKED = (
    "content-type",
    "Content-Type",
    "CONTENT-DISPOSITION",
    "content-transfer-encoding",
    "from",
    "to",
    "subject",
    "message-id",
    "received",
    "x-absent",
)


def _lookups(msg: Message) -> list[object]:
    """What the decoder asks of each part's headers, answered."""
    out: list[object] = []
    for part in msg.walk():
        for name in _ASKED:
            out += [
                name in part,
                part.get(name),
                part.get_all(name),
                part.get_params(header=name),
                part.get_params(header=name, unquote=False),
                part.get_param("charset", header=name),
                part.get_param("name", header=name),
                part.get_param("filename", header=name),
            ]
        out += [
            part.get_content_type(),
            part.get_content_charset(),
            part.get_filename(),
            part.get_boundary(),
            part.items(),
        ]
    return out


@pytest.mark.parametrize("path", _FIXTURES, ids=lambda p: p.stem)
def test_indexed_header_lookups_answer_as_the_stdlib_message(path: pathlib.Path) -> None:
    raw = path.read_bytes()
    expected = email.message_from_bytes(raw, policy=policy.compat32)

    parsed = feedparse.message_from_bytes(raw)

    assert all(isinstance(p, feedparse.IndexedMessage) for p in parsed.walk())
    assert _lookups(parsed) == _lookups(expected)
    assert headers.raw_all(parsed, "Received") == [
        str(v) for k, v in expected.raw_items() if k.lower() == "received"
    ]


def test_indexed_header_lookups_follow_every_change_to_the_headers() -> None:
    raw = _multipart(3, "b1")
    parsed = feedparse.message_from_bytes(raw)
    expected = email.message_from_bytes(raw, policy=policy.compat32)
    changes = [
        lambda m: m.replace_header("Subject", "Changed in place"),
        lambda m: m.__delitem__("to"),
        lambda m: m.__setitem__("X-Added", "one"),
        lambda m: m.add_header("X-Added", "two", kind="second"),
        lambda m: m.set_param("charset", "euc-kr"),
        lambda m: m.set_param("boundary", "b2"),
        lambda m: m.del_param("boundary"),
        lambda m: m.set_type("text/plain"),
        lambda m: m.set_raw("Content-Type", "text/html; charset=utf-8"),
    ]
    for change in changes:
        parsed_before = _lookups(parsed)  # the index and the parameters are built, then changed
        change(parsed)
        change(expected)
        assert _lookups(parsed) == _lookups(expected)
        assert _lookups(parsed) != parsed_before
    assert headers.raw_all(parsed, "x-added") == ["one", 'two; kind="second"']


def test_a_parts_parameters_are_parsed_once_however_often_they_are_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The decoder asks a part's Content-Type for its type, charset, name and boundary several
    times over: the parameter list is parsed once a part and header."""
    import email.message as stdlib_message

    parsed_lists: list[str] = []
    real = stdlib_message._parseparam

    def counting(s: str) -> list[str]:
        parsed_lists.append(s)
        return real(s)  # type: ignore[no-any-return]

    mail = _multipart(5, "=====boundary-5=====")
    monkeypatch.setattr(stdlib_message, "_parseparam", counting)
    decoded = mime.parse(mail)
    monkeypatch.undo()

    assert decoded.attachments[0].filename == "a.pdf"
    assert "invoice 5" in decoded.body
    assert len(parsed_lists) == len(set(parsed_lists)) > 0, parsed_lists
