"""One format for every signed token: kinds kept apart, tampering refused, and the tokens issued
before the format was shared still valid."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from switchboard.core import auth
from switchboard.core.errors import Unauthenticated
from switchboard.core.signing import (
    BAD_ENCODING,
    FORGED,
    MALFORMED,
    Sealer,
    TokenError,
    b64url_encode,
    purpose_key,
)

SECRET = "platform-secret"


def kinds() -> list[Sealer]:
    return [
        Sealer(SECRET.encode(), "sb1"),
        Sealer(purpose_key(SECRET, "switchboard chat visitor token"), "sv1"),
        Sealer(purpose_key(SECRET, "switchboard case page token"), "pt1"),
    ]


def test_a_token_opens_only_as_its_own_kind() -> None:
    every = kinds()
    for sealer in every:
        token = sealer.seal(b'{"t":"acme"}')
        assert sealer.open(token) == b'{"t":"acme"}'
        for other in every:
            if other is not sealer:
                with pytest.raises(TokenError):
                    other.open(token)
                # The same body under another kind's prefix: its key still refuses it.
                _, body, sig = token.split(".")
                with pytest.raises(TokenError) as refused:
                    other.open(f"{other.prefix}.{body}.{sig}")
                assert refused.value.reason == FORGED


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda t: "", MALFORMED),
        (lambda t: None, MALFORMED),
        (lambda t: t + "." + t, MALFORMED),
        (lambda t: t + "x" * 5000, MALFORMED),  # longer than any token of ours
        (lambda t: t.replace("pt1.", "pt2.", 1), MALFORMED),
        (lambda t: t + "!", BAD_ENCODING),  # junk outside base64url is not skipped
        (lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"), FORGED),
        (lambda t: "pt1." + b64url_encode(b'{"t":"other"}') + "." + t.split(".")[2], FORGED),
    ],
)
def test_tampered_or_malformed_tokens_say_why(mangle, reason: str) -> None:  # type: ignore[no-untyped-def]
    sealer = kinds()[2]
    with pytest.raises(TokenError) as refused:
        sealer.open(mangle(sealer.seal(b'{"t":"acme"}')))
    assert refused.value.reason == reason


def test_access_tokens_minted_before_the_shared_format_still_verify() -> None:
    # An sb1 token as the platform has always minted it: the mac over "sb1.<body>" keyed with
    # the secret itself. Partners hold such tokens; they must not stop working.
    claims = auth.auth_pb2.TokenClaims(tenant="acme", subject="partner-1", roles=["partner"])
    body = b64url_encode(claims.SerializeToString(deterministic=True))
    mac = hmac.new(SECRET.encode(), f"sb1.{body}".encode(), hashlib.sha256).digest()
    principal = auth.verify(SECRET, f"sb1.{body}.{b64url_encode(mac)}")
    assert (principal.tenant, principal.subject, principal.roles) == (
        "acme",
        "partner-1",
        frozenset({"partner"}),
    )
    assert principal.scopes == frozenset()  # a token from before scopes grants none
    # New tokens carry more claims (expiry, issue time, scopes) but are sealed the same way.
    prefix, minted_body, minted_mac = auth.mint(SECRET, "acme", "partner-1", ["partner"]).split(".")
    expected = hmac.new(SECRET.encode(), f"sb1.{minted_body}".encode(), hashlib.sha256).digest()
    assert (prefix, minted_mac) == ("sb1", b64url_encode(expected))
    with pytest.raises(Unauthenticated, match="signature does not match"):
        auth.verify("another-secret", f"sb1.{body}.{b64url_encode(mac)}")
