"""The mailbox configuration: the embedded default loads, and every mistake is named by file,
line and field (a misspelt field is refused, not ignored)."""

from __future__ import annotations

import pytest

from switchboard.email_ingest import config

BOX = "mailboxes:\n  - name: support\n    tenant: demo\n    address: support@example.com\n"


def test_the_embedded_default_loads() -> None:
    cfg = config.load()
    box = cfg.mailbox("demo-support")
    assert cfg.catch_all == "demo-support" and box.tenant == "demo"
    assert cfg.for_recipient("billing+x@demo.switchboard.local") is box
    assert "환불" in box.skills[0].keywords


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("mailbox: []\n", "e.yaml:1: mailbox: unknown field"),
        (BOX + "    queu: billing\n", "e.yaml:5: mailboxes[0].queu: unknown field"),
        (BOX.replace("support@example.com", "nobody"), "e.yaml:4: mailboxes[0].address: must be"),
        (BOX.replace("demo", "Not A Tenant"), "e.yaml:3: mailboxes[0].tenant: 'Not A Tenant'"),
        (BOX + "    imap: {security: starttls}\n", "e.yaml:5: mailboxes[0].imap.security"),
        (BOX + "    imap: {port: 99999}\n", "e.yaml:5: mailboxes[0].imap.port"),
        (BOX + "    routes: [{queue: q}]\n", "mailboxes[0].routes[0].address: is required"),
        (BOX + "    auto_acknowledge: sometimes\n", "mailboxes[0].auto_acknowledge"),
        (BOX + BOX.removeprefix("mailboxes:\n"), "e.yaml:5: mailboxes[1].name: another mailbox"),
        ("catch_all: nowhere\n" + BOX, "e.yaml:1: catch_all: no mailbox named 'nowhere'"),
    ],
)
def test_a_mistake_names_its_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load_text(text, "e.yaml")
    assert error in str(refused.value)


def test_a_password_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORT_IMAP_PASSWORD", "s3cret")
    cfg = config.load_text(BOX + "    imap: {host: imap, password_env: SUPPORT_IMAP_PASSWORD}\n")
    imap = cfg.mailbox("support").imap
    assert imap is not None and (imap.password, imap.port) == ("s3cret", 143)
