from __future__ import annotations

import time

import pytest

from switchboard.core import auth, roles
from switchboard.core.errors import InvalidArgument, PermissionDenied, Unauthenticated


def test_round_trip() -> None:
    token = auth.mint("s3cret", "acme", "ko-1", ["agent"])
    p = auth.verify("s3cret", token)
    assert (p.tenant, p.subject, p.roles) == ("acme", "ko-1", frozenset({"agent"}))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "malformed"),
        ("sb1.only-two", "malformed"),
        ("jwt.a.b", "malformed"),
        ("sb1.!!!.???", "malformed"),
    ],
)
def test_malformed_tokens(token: str, reason: str) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        auth.verify("s3cret", token)


def test_forged_and_expired() -> None:
    token = auth.mint("s3cret", "acme", "ko-1", ["agent"])
    with pytest.raises(Unauthenticated, match="signature"):
        auth.verify("other-secret", token)
    # another tenant's claims under this token's signature
    forged = auth.mint("x", "globex", "ko-1", ["admin"]).split(".")[1]
    head, _, sig = token.split(".")
    with pytest.raises(Unauthenticated, match="signature"):
        auth.verify("s3cret", f"{head}.{forged}.{sig}")
    expiring = auth.mint("s3cret", "acme", "ko-1", ["agent"], ttl_seconds=60)
    with pytest.raises(Unauthenticated, match="expired"):
        auth.verify("s3cret", expiring, now=10**11)


def test_unknown_tenant_is_permission_denied() -> None:
    token = auth.mint("s3cret", "initech", "p-1", ["partner"])
    with pytest.raises(PermissionDenied, match="initech"):
        auth.verify("s3cret", token, frozenset({"acme"}))


def test_bad_tenant_and_role_are_refused_when_minting() -> None:
    with pytest.raises(InvalidArgument, match="tenant"):
        auth.mint("s", "Not A Tenant", "x", ["agent"])
    with pytest.raises(ValueError, match="roles"):
        auth.mint("s", "acme", "x", ["root"])


def test_partner_scopes_travel_in_the_token() -> None:
    token = auth.mint("s3cret", "acme", "p-1", ["partner"], scopes=["cases:read", "kb:read"])
    p = auth.verify("s3cret", token)
    assert p.scopes == frozenset({"cases:read", "kb:read"})
    # A token without scopes (every token minted before they existed) simply has none.
    assert auth.verify("s3cret", auth.mint("s3cret", "acme", "p-1", ["partner"])).scopes == set()
    with pytest.raises(ValueError, match="unknown scopes"):
        auth.mint("s", "acme", "p-1", ["partner"], scopes=["cases:everything"])
    with pytest.raises(ValueError, match="partner"):
        auth.mint("s", "acme", "ko-1", ["agent"], scopes=["cases:read"])


def test_an_own_role_acts_only_for_itself() -> None:
    rule = roles.RULES["/switchboard.v1.RouterService/AcceptOffer"]
    agent = auth.Principal("acme", "ko-1", frozenset({"agent"}))
    assert rule.may_act_for(agent, "ko-1")
    assert not rule.may_act_for(agent, "ko-2")
    assert rule.may_act_for(auth.Principal("acme", "gw", frozenset({"service"})), "ko-2")
    partner = auth.Principal("acme", "p-1", frozenset({"partner"}), frozenset({"cases:read"}))
    assert not rule.admits(partner)
    acting = auth.Principal(
        "acme", "p-1", frozenset({"partner"}), frozenset({"routing:act-as-agent"})
    )
    assert rule.may_act_for(acting, "ko-2")


def test_a_maximum_lifetime_refuses_tokens_that_live_longer_or_forever() -> None:
    day = 24 * 3600
    with pytest.raises(ValueError, match="at most"):
        auth.mint("s", "acme", "p-1", ["partner"], ttl_seconds=None, max_lifetime=day)
    with pytest.raises(ValueError, match="at most"):
        auth.mint("s", "acme", "p-1", ["partner"], ttl_seconds=day + 1, max_lifetime=day)
    ok = auth.mint("s", "acme", "p-1", ["partner"], ttl_seconds=day, max_lifetime=day)
    assert auth.verify("s", ok, max_lifetime=day).subject == "p-1"

    forever = auth.mint("s", "acme", "p-1", ["partner"], ttl_seconds=None)
    assert auth.verify("s", forever).subject == "p-1"  # no maximum: still accepted
    with pytest.raises(Unauthenticated, match="never expires"):
        auth.verify("s", forever, max_lifetime=day)
    long_lived = auth.mint("s", "acme", "p-1", ["partner"], ttl_seconds=30 * day)
    with pytest.raises(Unauthenticated, match="longer"):
        auth.verify("s", long_lived, max_lifetime=day)
    # Older than the maximum (it was minted with a longer one): refused although not expired.
    with pytest.raises(Unauthenticated, match="longer"):
        auth.verify("s", long_lived, max_lifetime=day, now=time.time() + 2 * day)


def test_the_default_lifetime_is_finite() -> None:
    p = auth.auth_pb2.TokenClaims.FromString(
        auth._sealer("s").open(auth.mint("s", "acme", "ko-1", ["agent"]))
    )
    assert p.expires_at - p.issued_at == auth.DEFAULT_TTL_SECONDS
