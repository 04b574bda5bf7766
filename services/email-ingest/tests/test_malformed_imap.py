"""Malformed mail from the corpus delivered to a real Dovecot and ingested over IMAP: the contact
carries the text a lenient reader shows."""

from __future__ import annotations

from pathlib import Path

from switchboard.v1 import events_pb2

CORPUS_DIR = Path(__file__).parent / "fixtures" / "malformed"


async def test_malformed_mail_fetched_from_dovecot_keeps_its_text(
    dovecot, make_app, make_config, collector
):
    western = (CORPUS_DIR / "raw8bit-cp1252.eml").read_bytes()
    no_head_end = (CORPUS_DIR / "html-head-unclosed.eml").read_bytes()
    await dovecot.append([western, no_head_end])
    await make_app(make_config(dovecot))
    await collector.wait(lambda c: len(c.of(events_pb2.ContactCreated)) == 2)
    by_subject = {e.contact.subject: e.contact for e in collector.of(events_pb2.ContactCreated)}
    first = by_subject["Réclamation – facture n° 42 “urgent”"]
    assert first.customer_name == "François Müller"
    assert first.content[0].text == "Bonjour, la facture est fausse. Merci d’avance."
    second = by_subject["html"]
    assert second.content[0].text == "My refund is late.\n\nOrder 77."
