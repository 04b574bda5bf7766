"""The chat configuration: the embedded default and the dataclass defaults agree, a file leaves
out what it does not change, and every mistake is named by file, line and field."""

from __future__ import annotations

import pytest

from switchboard.chat import config


def test_the_embedded_default_is_the_defaults() -> None:
    default = config.load()
    assert default.limits == config.Limits()
    assert default.tenant("any") == config.TenantConfig()


def test_a_file_changes_only_what_it_names() -> None:
    cfg = config.load_text(
        "limits: {message_burst: 3}\ntenants:\n  acme:\n    allowed_origins: [https://Shop.example]\n"
        "    hours: {timezone: Asia/Seoul, days: [Mon, tue], open: '09:00', close: '18:00'}\n"
    )
    assert cfg.limits.message_burst == 3
    assert cfg.limits.messages_per_second == config.Limits().messages_per_second
    acme = cfg.tenant("acme")
    assert acme.allowed_origins == frozenset({"https://shop.example"})
    assert acme.hours is not None and acme.hours.days == frozenset({"mon", "tue"})
    assert cfg.tenant("other") == config.TenantConfig()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("limit: {}\n", "c.yaml:1: limit: unknown field"),
        ("limits: {message_brust: 3}\n", "c.yaml:1: limits.message_brust: unknown field"),
        ("limits: {message_burst: 0}\n", "c.yaml:1: limits.message_burst: must be an integer"),
        ("limits:\n  messages_per_second: 0\n", "c.yaml:2: limits.messages_per_second"),
        (
            "tenants:\n  acme:\n    allowed_origins: [ftp://x]\n",
            "c.yaml:3: tenants.acme.allowed_origins[0]: 'ftp://x' is not scheme://host[:port]",
        ),
        (
            "tenants:\n  acme:\n    hours: {timezone: Mars/Base}\n",
            "c.yaml:3: tenants.acme.hours.timezone: unknown time zone 'Mars/Base'",
        ),
        ("tenants:\n  acme:\n    hours: {open: noon}\n", "tenants.acme.hours.open: must be HH:MM"),
        ("tenants:\n  acme:\n    hours: {days: [someday]}\n", "tenants.acme.hours.days"),
    ],
)
def test_a_mistake_names_its_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load_text(text, "c.yaml")
    assert error in str(refused.value)


def test_an_unreadable_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(config.ConfigError, match=r"missing\.yaml"):
        config.load(tmp_path / "missing.yaml")
