"""The voice configuration: the embedded default loads, and every mistake is named by file, line
and field instead of being ignored or reported without a place."""

from __future__ import annotations

import pytest

from switchboard.core.settings import UnsafeSettings
from switchboard.voice_gateway import config
from switchboard.voice_gateway.recording import sealing
from switchboard.voice_gateway.settings import VoiceGatewaySettings as VoiceSettings

NUMBER = """\
numbers:
  "+8215880001":
    tenant: demo
{extra}
"""


def test_the_embedded_default_loads() -> None:
    cfg = config.load()
    plan = cfg.plan_for("8215880001")
    assert plan is not None and plan.tenant == "demo" and plan.menu_timeout == 6.0
    assert plan.language_menu is not None and plan.language_menu.options["2"] == "zh"
    assert cfg.transfer_codes == {"9": "english"}
    assert "language-menu" in cfg.prompts


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("realm: x\nphone: {}\n", "v.yaml:2: phone: unknown field"),
        (NUMBER.format(extra="    menu_timout: 6s"), "v.yaml:4: numbers.+8215880001.menu_timout"),
        (
            NUMBER.format(extra="    menu_timeout: soon"),
            "v.yaml:4: numbers.+8215880001.menu_timeout: 'soon' is not a duration",
        ),
        (
            NUMBER.format(extra="    topic_menu:\n      options: {'x': billing}"),
            "v.yaml:5: numbers.+8215880001.topic_menu.options.x: 'x' is not a DTMF key",
        ),
        (
            NUMBER.format(extra="    topic_menu:\n      prompt: topic-menu"),
            "v.yaml:5: numbers.+8215880001.topic_menu.options: is required",
        ),
        (NUMBER.format(extra="    callback_key: '5x'"), "numbers.+8215880001.callback_key"),
        ('numbers:\n  "+1": {queue: q}\n', "v.yaml:2: numbers.+1.tenant: is required"),
        ('numbers:\n  "+1": {tenant: "Not A Tenant"}\n', "numbers.+1.tenant"),
        ("transfer_codes: [9]\n", "v.yaml:1: transfer_codes: must be a mapping"),
        ("realm: [\n", "v.yaml:2: (document): not valid YAML"),
        ("survey_tenants: [Not A Tenant]\n", "v.yaml:1: survey_tenants"),
    ],
)
def test_a_mistake_names_its_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.load_text(text, "v.yaml")
    assert str(refused.value).startswith(error) or error in str(refused.value)


def test_empty_sections_are_empty_and_durations_take_any_unit() -> None:
    cfg = config.load_text(
        "phones:\nnumbers:\n  '+1':\n    tenant: demo\n    menu_timeout: 1500ms\n"
        "    announce_every: 2m\n"
    )
    assert cfg.phones == {}
    plan = cfg.numbers["+1"]
    assert (plan.menu_timeout, plan.announce_every, plan.queue) == (1.5, 120.0, "general")


def test_settings_follow_the_naming_scheme_and_still_read_the_old_names() -> None:
    from switchboard.voice_gateway.settings import VoiceGatewaySettings

    assert VoiceGatewaySettings(VOICE_CONFIG_FILE="/etc/v.yaml").config_path == "/etc/v.yaml"
    assert VoiceGatewaySettings(VOICE_CONFIG="/etc/old.yaml").config_path == "/etc/old.yaml"
    assert VoiceGatewaySettings(VOICE_ROUTER_ADDR="r:1").router_addr == "r:1"
    assert VoiceGatewaySettings(SWITCHBOARD_ROUTER_ADDR="r:2").router_addr == "r:2"
    assert VoiceGatewaySettings(VOICE_GRPC_PORT=7).grpc_port == 7


def test_phones_belong_to_a_tenant_and_the_flat_form_only_to_the_one_tenant_of_the_numbers() -> (
    None
):
    two = (
        "phones:\n  demo: {a1: pw-d}\n  acme: {a1: pw-a}\nnumbers:\n"
        "  '+1': {tenant: demo}\n  '+2': {tenant: acme}\n"
    )
    assert config.load_text(two).phones == {("demo", "a1"): "pw-d", ("acme", "a1"): "pw-a"}
    flat = "phones:\n  a1: pw\nnumbers:\n  '+1': {tenant: demo}\n"
    assert config.load_text(flat).phones == {("demo", "a1"): "pw"}
    with pytest.raises(config.ConfigError) as refused:
        config.load_text(
            "phones:\n  a1: pw\nnumbers:\n  '+1': {tenant: demo}\n  '+2': {tenant: acme}\n",
            "v.yaml",
        )
    assert str(refused.value).startswith("v.yaml:2: phones.a1: give each tenant's phones")
    assert config.load().phones[("demo", "agent-ko")] == "demo-ko"


RECORDING_KEY = "c2VjcmV0LXJlY29yZGluZy1rZXktb2YtMzItYnl0ZXM="  # base64 of 32 bytes


def test_production_refuses_the_demo_phones() -> None:
    production = VoiceSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", VOICE_RECORDING_KEY=RECORDING_KEY
    )
    with pytest.raises(UnsafeSettings, match="VOICE_CONFIG_FILE is unset"):
        production.refuse_unsafe_production()
    VoiceSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret",
        VOICE_CONFIG_FILE="/etc/voice.yaml",
        VOICE_RECORDING_KEY=RECORDING_KEY,
    ).refuse_unsafe_production()
    VoiceSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", SWITCHBOARD_MODE="development"
    ).refuse_unsafe_production()


def test_production_refuses_to_start_without_a_recording_key_of_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Derived from the auth secret, recordings would be lost with that secret's next change:
    production wants the Secret voice-recording-key, and says so."""
    import base64
    import os

    given = {"SWITCHBOARD_AUTH_SECRET": "own-secret", "VOICE_CONFIG_FILE": "/etc/voice.yaml"}
    with pytest.raises(UnsafeSettings) as refused:
        VoiceSettings(**given).refuse_unsafe_production()  # type: ignore[arg-type]
    assert str(refused.value).startswith(
        "VOICE_RECORDING_KEY_FILE (or VOICE_RECORDING_KEY) is unset: call recordings would be "
        "sealed with a key derived from SWITCHBOARD_AUTH_SECRET"
    )
    key_file = tmp_path / "key"
    with pytest.raises(UnsafeSettings, match=f"VOICE_RECORDING_KEY_FILE {key_file} cannot be"):
        VoiceSettings(**given, VOICE_RECORDING_KEY_FILE=str(key_file)).refuse_unsafe_production()  # type: ignore[arg-type]
    key, old = os.urandom(32), os.urandom(32)
    key_file.write_text(base64.b64encode(key).decode() + "\n")
    old_file = tmp_path / "old-keys"
    old_file.write_text("not-a-key\n")
    keyed = VoiceSettings(  # type: ignore[arg-type]
        **given, VOICE_RECORDING_KEY_FILE=str(key_file), VOICE_RECORDING_OLD_KEYS_FILE=str(old_file)
    )
    with pytest.raises(UnsafeSettings, match="old-keys:1: an old recording key"):
        keyed.refuse_unsafe_production()
    old_file.write_text(base64.b64encode(old).decode() + "\n")
    keyed.refuse_unsafe_production()
    assert keyed.recording_keys() == sealing.RecordingKeys(key, (old,))
    # A developer's machine derives one from the auth secret.
    VoiceSettings(
        SWITCHBOARD_AUTH_SECRET="own-secret", SWITCHBOARD_MODE="development"
    ).refuse_unsafe_production()


def test_the_replica_id_is_an_index_its_nats_user_may_name_a_durable_by() -> None:
    from pydantic import ValidationError

    from switchboard.core import nats_auth

    granted = {durable for _, durable in nats_auth.SERVICES["voice-gateway"].consumers}
    for replica in ("", "0", "15"):
        durable = "voice-gateway" + (f"-{replica}" if replica else "")
        assert VoiceSettings(SWITCHBOARD_REPLICA_ID=replica).replica_id == replica
        assert durable in granted
    for wrong in ("16", "voice-gateway-0", "a"):
        with pytest.raises(ValidationError, match="replica id is its index, 0 to 15"):
            VoiceSettings(SWITCHBOARD_REPLICA_ID=wrong)


def test_survey_tenants_are_read() -> None:
    cfg = config.load_text("survey_tenants: [demo, acme]\n" + NUMBER.format(extra=""))
    assert cfg.survey_tenants == {"demo", "acme"}
    assert config.load_text(NUMBER.format(extra="")).survey_tenants == frozenset()


def test_supervisors_dial_the_configured_extension_and_each_has_a_phone() -> None:
    cfg = config.load_text(
        "phones: {demo: {sup1: pw, a1: pw}}\n"
        "supervision: {extension: '*77', supervisors: {demo: [sup1]}}\n"
    )
    assert cfg.supervision_extension == "*77" and cfg.supervisors == {("demo", "sup1")}
    assert config.load_text("phones: {demo: {a1: pw}}\n").supervision_extension == "*55"
    assert not config.load_text("supervision: {extension: null}\n").supervision_extension
    with pytest.raises(config.ConfigError, match=r"v\.yaml:2: supervision\.supervisors\.demo\[0\]"):
        config.load_text(
            "phones: {demo: {a1: pw}}\nsupervision: {supervisors: {demo: [sup1]}}\n", "v.yaml"
        )
    with pytest.raises(config.ConfigError, match=r"supervision\.extension: must be dialable keys"):
        config.load_text("supervision: {extension: 'sup'}\n", "v.yaml")
