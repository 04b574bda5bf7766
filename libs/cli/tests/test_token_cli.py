"""`switchboard token`: roles, partner scopes, and a lifetime no longer than the services accept."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.cli.__main__ import main
from switchboard.core import auth

SECRET = "token-cli-secret"


@pytest.fixture(autouse=True)
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", SECRET)
    monkeypatch.delenv("SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS", raising=False)


def token(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(["token", "--tenant", "demo", "--subject", "p-1", *argv])
    return capsys.readouterr().out.strip()


def test_a_partner_token_carries_its_scopes(capsys: pytest.CaptureFixture[str]) -> None:
    minted = token(capsys, "--role", "partner", "--scope", "cases:read", "--scope", "kb:read")
    p = auth.verify(SECRET, minted, max_lifetime=30 * 24 * 3600)
    assert (p.roles, p.scopes) == ({"partner"}, {"cases:read", "kb:read"})


def test_a_token_longer_than_the_maximum_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for ttl in ("0", str(31 * 24 * 3600)):
        with pytest.raises(SystemExit, match="at most 2592000 s"):
            token(capsys, "--role", "admin", "--ttl", ttl)
    monkeypatch.setenv("SWITCHBOARD_TOKEN_MAX_LIFETIME_SECONDS", "0")  # no limit: allowed
    assert auth.verify(SECRET, token(capsys, "--role", "admin", "--ttl", "0")).subject == "p-1"
