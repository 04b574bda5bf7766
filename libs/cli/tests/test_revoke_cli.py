"""`switchboard revoke` against a real nats-server, through the command's main(): the revocation
is in the list every service follows, and a bad tenant is refused with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.core import auth
from switchboard.core.bus import Bus
from switchboard.core.errors import Unauthenticated
from switchboard.core.revocation import Revocations

from .conftest import cli


async def test_revoke_puts_the_principal_on_the_list_services_follow(
    nats_url: str,
    bus: Bus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SWITCHBOARD_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("NATS_USER", raising=False)
    leaked = auth.verify("s", auth.mint("s", "acme", "partner-1", ["partner"]))
    assert (
        await cli("revoke", "--tenant", "acme", "--subject", "partner-1", "--nats", nats_url) == 0
    )
    assert "revoked: tokens of partner-1 (acme) issued until" in capsys.readouterr().out
    followed = await Revocations.open(bus.js)
    try:
        with pytest.raises(Unauthenticated, match="revoked"):
            followed.check(leaked)
        followed.check(auth.verify("s", auth.mint("s", "acme", "partner-2", ["partner"])))
    finally:
        await followed.close()

    assert (
        await cli("revoke", "--tenant", "Not A Tenant", "--subject", "x", "--nats", nats_url) == 1
    )
    assert "tenant" in capsys.readouterr().out
