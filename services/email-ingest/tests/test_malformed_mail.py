"""Malformed mail read as a lenient reader would: a corpus of broken messages kept as files under
fixtures/malformed (each `<name>.eml` beside `<name>.json`, the text a reader must show), and a fuzz
test that mutates them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from switchboard.email_ingest.adapters.jetstream import OBJECTS, EmailObjects, EmailState
from switchboard.email_ingest.config import EmailConfig
from switchboard.email_ingest.domain import mime
from switchboard.email_ingest.ingest import Incoming, Ingestor
from switchboard.email_ingest.notifier import EmailNotifier
from switchboard.testing.fakes import FakeKeyValue, FakeObjectStore, FakePublisher
from switchboard.v1 import email_pb2, events_pb2

CORPUS_DIR = Path(__file__).parent / "fixtures" / "malformed"
CASES = sorted(p.stem for p in CORPUS_DIR.glob("*.eml"))


def load(name: str) -> tuple[bytes, dict[str, Any]]:
    raw = (CORPUS_DIR / f"{name}.eml").read_bytes()
    expected = json.loads((CORPUS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return raw, expected


def test_the_corpus_is_complete() -> None:
    assert len(CASES) >= 50
    for name in CASES:
        assert (CORPUS_DIR / f"{name}.json").exists(), name


@pytest.mark.parametrize("name", CASES)
def test_malformed_mail_shows_what_a_lenient_reader_shows(name: str) -> None:
    raw, expected = load(name)
    parsed = mime.parse(raw)
    if "subject" in expected:
        assert parsed.subject == expected["subject"]
    if "from_name" in expected:
        assert parsed.from_name == expected["from_name"]
    if "from_address" in expected:
        assert parsed.from_address == expected["from_address"]
    # What the contact carries is the new text, or the whole body when there is no reply split.
    shown = parsed.new_text or parsed.body
    for text in expected.get("body", []):
        assert text in parsed.body, (text, parsed.body, parsed.problems)
        assert text in shown
    for text in expected.get("not_in_body", []):
        assert text not in parsed.body, (text, parsed.body)
    if "filenames" in expected:
        assert [a.filename for a in parsed.attachments] == expected["filenames"]
    if expected.get("no_attachments"):
        assert parsed.attachments == []
    assert "\ufffd" not in parsed.body + parsed.subject + parsed.from_name


async def test_every_malformed_mail_becomes_a_contact_with_its_text(
    make_config: Callable[..., EmailConfig],
) -> None:
    """Through the ingest itself (on fakes of its stores): none is dropped or quarantined, and
    the contact carries the subject, sender and text a reader would show."""
    config = make_config(None)
    bus = FakePublisher()
    state = EmailState(
        FakeKeyValue("checkpoints"),
        FakeKeyValue("threads"),
        FakeKeyValue("seen"),
        FakeKeyValue("sent"),
    )
    ingestor = Ingestor(config, state, EmailObjects(FakeObjectStore(OBJECTS)), EmailNotifier(bus))
    mailbox = config.mailboxes[0]
    for name in CASES:
        raw, expected = load(name)
        origin = email_pb2.EmailOrigin(intake=email_pb2.EMAIL_INTAKE_IMAP, mailbox=mailbox.name)
        prepared = await ingestor.ingest(Incoming(raw, mailbox, origin))
        assert not prepared.quarantined, (name, prepared.quarantined)
        contact = next(
            e.contact
            for e in bus.of(events_pb2.ContactCreated)
            if e.contact.contact_id == prepared.contact_id
        )
        if "subject" in expected:
            assert contact.subject == expected["subject"], name
        if "from_name" in expected:
            assert contact.customer_name == expected["from_name"], name
        if "from_address" in expected:
            assert contact.identities[0].value == expected["from_address"], name
        for text in expected.get("body", []):
            assert text in contact.content[0].text, (name, text)
        if "filenames" in expected:
            assert [a.filename for a in contact.attachments] == expected["filenames"], name
    assert len(bus.of(events_pb2.ContactCreated)) == len(CASES)


def _mutate(raw: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "duplicate", "delete", "insert"]))
    if not raw:
        return raw
    if kind == "flip":
        out = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 16))):
            i = data.draw(st.integers(0, len(out) - 1))
            out[i] = data.draw(st.integers(0, 255))
        return bytes(out)
    if kind == "truncate":
        return raw[: data.draw(st.integers(0, len(raw)))]
    if kind == "delete":
        i = data.draw(st.integers(0, len(raw) - 1))
        return raw[:i] + raw[i + data.draw(st.integers(1, 64)) :]
    if kind == "insert":
        i = data.draw(st.integers(0, len(raw)))
        chunk = data.draw(
            st.sampled_from(
                [
                    b"\r\n",
                    b"\n\n",
                    b"--",
                    b"=?",
                    b"?=",
                    b"<",
                    b"<!--",
                    b"<style>",
                    b"\x00",
                    b"\xff\xfe",
                ]
            )
            | st.binary(max_size=32)
        )
        return raw[:i] + chunk + raw[i:]
    # Duplicate a header line (or any line) in place, possibly many times.
    lines = raw.split(b"\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    times = data.draw(st.integers(1, 50))
    return b"\n".join(lines[:i] + [lines[i]] * times + lines[i:])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(name=st.sampled_from(CASES), data=st.data())
def test_mutated_corpus_mail_never_breaks_the_parser(name: str, data: st.DataObject) -> None:
    raw = (CORPUS_DIR / f"{name}.eml").read_bytes()
    for _ in range(data.draw(st.integers(1, 3))):
        raw = _mutate(raw, data)
    parsed = mime.parse(raw)
    assert isinstance(parsed, mime.ParsedMail)
    assert parsed.size == len(raw)
    assert isinstance(parsed.body, str) and isinstance(parsed.subject, str)
