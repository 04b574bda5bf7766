"""`switchboard nats-config`: the configuration it prints runs a nats-server that admits each
service with the password it kept, and nobody else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from switchboard.cli.__main__ import main
from switchboard.core import nats_auth
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.contacts import chat_contact_created
from switchboard.testing.secured_nats import assert_refused


async def test_the_printed_configuration_admits_the_services_and_nobody_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials, env_file = tmp_path / "nats-credentials.json", tmp_path / "nats-users.env"
    with pytest.raises(SystemExit) as done:
        main(["nats-config", "--credentials", str(credentials), "--env-file", str(env_file)])
    assert done.value.code == 0
    config = tmp_path / "nats.conf"
    config.write_text(capsys.readouterr().out)
    passwords = json.loads(credentials.read_text())
    assert set(passwords) == {nats_auth.OPERATOR, *nats_auth.SERVICES}
    assert env_file.read_text().splitlines() == [f"{u}={p}" for u, p in passwords.items()]
    for path in (credentials, env_file):
        assert path.stat().st_mode & 0o777 == 0o600
    # Asked again, it keeps the passwords (the Secrets made from them stay valid).
    with pytest.raises(SystemExit):
        main(["nats-config", "--credentials", str(credentials)])
    assert capsys.readouterr().out == config.read_text()

    key = {nats_auth.KEY_ENV: nats_auth.new_jetstream_key()}
    server = NatsServer(tmp_path / "nats", config_file=config, env=key).start(timeout=30.0)
    try:
        options = nats_auth.client_options("chat", passwords["chat"])
        bus = await Bus.connect(server.url, source="chat", **options)
        await bus.publish(chat_contact_created("c-1"))
        await bus.drain()
        await assert_refused(server.url)
    finally:
        server.stop()


async def test_the_authorization_alone_is_included_by_a_configuration_of_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--authorization-only prints the users for a configuration that sets JetStream itself
    (deploy/k8s: `include auth.conf`); the same kept passwords admit the services."""
    credentials = tmp_path / "nats-credentials.json"
    with pytest.raises(SystemExit) as done:
        main(["nats-config", "--credentials", str(credentials), "--authorization-only"])
    assert done.value.code == 0
    auth = capsys.readouterr().out
    assert auth.startswith("authorization: ") and "jetstream" not in auth
    (tmp_path / "auth.conf").write_text(auth)
    config = tmp_path / "nats.conf"
    config.write_text(
        "include auth.conf\njetstream {\n  cipher: chachapoly\n  key: $NATS_JETSTREAM_KEY\n}\n"
    )
    passwords = json.loads(credentials.read_text())
    key = {nats_auth.KEY_ENV: nats_auth.new_jetstream_key()}
    server = NatsServer(tmp_path / "nats", config_file=config, env=key).start(timeout=30.0)
    try:
        options = nats_auth.client_options("chat", passwords["chat"])
        bus = await Bus.connect(server.url, source="chat", **options)
        await bus.publish(chat_contact_created("c-1"))
        await bus.drain()
        await assert_refused(server.url)
        await assert_refused(server.url, **nats_auth.client_options("chat", "wrong"))
    finally:
        server.stop()


def test_router_groups_get_their_consumers_and_journals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "nats-credentials.json"
    monkeypatch.setenv("ROUTER_GROUPS", "g1=demo;g2=korea")
    with pytest.raises(SystemExit):
        main(["nats-config", "--credentials", str(credentials)])
    text = capsys.readouterr().out
    for allowed in ("CONSUMER.CREATE.EVENTS.router-g1", "CONSUMER.CREATE.EVENTS.router-g2"):
        assert allowed in text
    assert "router.journal.g2" in text and "STREAM.CREATE.ROUTER_G1" in text
    assert 'EVENTS.router"' not in text  # no group "default" in this map
    with pytest.raises(SystemExit):
        main(["nats-config", "--credentials", str(credentials), "--authorization-only"])
    assert "CONSUMER.CREATE.EVENTS.router-g2" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["nats-config", "--credentials", str(credentials), "--router-groups", ""])
    text = capsys.readouterr().out
    assert 'CONSUMER.CREATE.EVENTS.router"' in text and "router-g1" not in text
