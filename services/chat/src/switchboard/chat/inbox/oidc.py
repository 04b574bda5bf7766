"""Sign-in through a tenant's company directory: OpenID Connect, Authorization Code with PKCE.

A tenant's agents file section may name an OIDC provider (``oidc:``, `directory.OidcConfig`).
Its sign-in screens then offer "Sign in with <company>", which goes:

1. ``GET /api/agent/oidc/start?tenant=&page=`` finds the provider's endpoints by discovery
   (``<issuer>/.well-known/openid-configuration``), makes a `state`, a `nonce` and a PKCE code
   verifier (RFC 7636, S256), keeps them in a signed, HttpOnly cookie bound to this browser, and
   redirects to the provider's authorization endpoint.
2. ``GET /api/agent/oidc/callback?code=&state=``: the state must be the cookie's, used once
   (a replayed callback is refused on every replica) and not older than `STATE_TTL_SECONDS`; the
   code is exchanged at the token endpoint (with the verifier and the client secret), and the ID
   token is verified with joserfc against the provider's JWKS: signature, ``iss``, ``aud`` (and
   ``azp``), ``exp``, ``iat``, ``nonce``. Its `agent_claim` names the agent, who must be in the
   tenant's directory and enabled; the directory still gives the role and profile.
3. The callback redirects back to the page; the inbox token (the very token a password sign-in
   gets) waits in a short-lived HttpOnly cookie that only ``POST /api/agent/oidc/result`` reads,
   once. A refusal redirects with ``#oidc-error=<reason>`` (`REASONS`), which the page shows in
   the user's language.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from switchboard.chat.inbox.directory import Directory, OidcConfig

logger = logging.getLogger(__name__)

STATE_COOKIE = "sb_oidc_state"
RESULT_COOKIE = "sb_oidc_result"
STATE_TTL_SECONDS = 600  # from "Sign in with" to the provider's answer
RESULT_TTL_SECONDS = 120  # from the callback to the page taking its token
CACHE_SECONDS = 3600  # discovery documents and key sets
HTTP_TIMEOUT = 10.0
MAX_RESPONSE = 256 * 1024
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
PAGES = ("inbox", "wallboard", "qa", "kb", "admin")
# Why a sign-in was refused (the page's message for each):
#   unavailable: no provider for the tenant, or it could not be reached
#   expired: the sign-in took too long, was already used, or began in another browser
#   refused: the provider refused, or its answer did not verify
#   unknown: the provider's user is not an agent of the tenant's directory
#   disabled: the agent is disabled in the directory
REASONS = ("unavailable", "expired", "refused", "unknown", "disabled")


class Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Started:
    location: str  # the provider's authorization URL
    cookie: str  # the state cookie's value


@dataclass(frozen=True)
class Finished:
    tenant: str
    agent_id: str
    page: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _get_json(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(
        url, data=data, headers={"accept": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as r:
            body = r.read(MAX_RESPONSE + 1)
    except urllib.error.HTTPError as exc:
        body = exc.read(MAX_RESPONSE + 1)
        try:
            error = json.loads(body).get("error", "")
        except (ValueError, AttributeError):
            error = ""
        raise Refused("refused", f"{url} answered {exc.code} {error}".strip()) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise Refused("unavailable", f"{url} cannot be reached: {exc}") from None
    if len(body) > MAX_RESPONSE:
        raise Refused("unavailable", f"{url} answered more than {MAX_RESPONSE} bytes")
    try:
        out = json.loads(body)
    except ValueError:
        raise Refused("unavailable", f"{url} did not answer JSON") from None
    if not isinstance(out, dict):
        raise Refused("unavailable", f"{url} did not answer a JSON object")
    return out


class OidcSignIn:
    def __init__(self, secret: str, claim: Any, clock: Any = time.time) -> None:
        # The state cookie's own key, derived from the platform secret.
        self._key = hashlib.sha256(b"switchboard-oidc-state\0" + secret.encode()).digest()
        self._claim = claim  # async (key) -> bool: True the first time (UsedLinks.claim)
        self._clock = clock
        self._discovery: dict[str, tuple[float, dict[str, Any]]] = {}
        self._keys: dict[str, tuple[float, KeySet]] = {}

    # ---- the provider's documents ------------------------------------------------------

    async def discover(self, config: OidcConfig) -> dict[str, Any]:
        cached = self._discovery.get(config.issuer)
        if cached and self._clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
        url = config.issuer + "/.well-known/openid-configuration"
        doc = await asyncio.to_thread(_get_json, url)
        if str(doc.get("issuer", "")).rstrip("/") != config.issuer:
            raise Refused("unavailable", f"{url} names another issuer: {doc.get('issuer')!r}")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(name), str) or not doc[name].startswith(
                ("https://", "http://")
            ):
                raise Refused("unavailable", f"{url} has no {name}")
        self._discovery[config.issuer] = (self._clock(), doc)
        return doc

    async def _key_set(self, doc: dict[str, Any], kid: str | None) -> KeySet:
        url = doc["jwks_uri"]
        cached = self._keys.get(url)
        fresh = cached and self._clock() - cached[0] < CACHE_SECONDS
        if cached and fresh and (kid is None or any(k.kid == kid for k in cached[1].keys)):
            return cached[1]
        try:  # a key not seen yet: the provider may have rotated its keys
            keys = KeySet.import_key_set(await asyncio.to_thread(_get_json, url))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise Refused("unavailable", f"{url} is not a JWK set: {exc}") from None
        self._keys[url] = (self._clock(), keys)
        return keys

    # ---- the state cookie --------------------------------------------------------------

    def _seal(self, data: dict[str, Any]) -> str:
        body = _b64(json.dumps(data, separators=(",", ":")).encode())
        mac = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        return f"{body}.{mac}"

    def _open(self, cookie: str) -> dict[str, Any]:
        body, _, mac = cookie.partition(".")
        expected = _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
        if not mac or not hmac.compare_digest(mac, expected):
            raise Refused("expired", "the sign-in cookie is not ours")
        data = json.loads(_unb64(body))
        if not isinstance(data, dict) or float(data.get("e", 0)) < self._clock():
            raise Refused("expired", "the sign-in took too long")
        return data

    # ---- the flow ----------------------------------------------------------------------

    async def start(
        self, directory: Directory, tenant: str, page: str, redirect_uri: str
    ) -> Started:
        config = directory.provider(tenant)
        if config is None:
            raise Refused("unavailable", f"tenant {tenant!r} has no OIDC sign-in")
        doc = await self.discover(config)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)  # 86 characters: RFC 7636 wants 43-128
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        query = urllib.parse.urlencode(
            {
                "response_type": "code",
                "client_id": config.client_id,
                "redirect_uri": redirect_uri,
                "scope": "openid profile email",
                "state": state,
                "nonce": nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        endpoint = doc["authorization_endpoint"]
        location = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        cookie = self._seal(
            {
                "t": tenant,
                "s": state,
                "n": nonce,
                "v": verifier,
                "p": page,
                "r": redirect_uri,
                "e": self._clock() + STATE_TTL_SECONDS,
            }
        )
        return Started(location, cookie)

    def page_of(self, cookie: str) -> tuple[str, str]:
        """The (tenant, page) a state cookie was made for, or ("", "inbox")."""
        try:
            data = self._open(cookie)
            return str(data["t"]), str(data["p"])
        except (Refused, ValueError, KeyError, TypeError):
            return "", "inbox"

    async def finish(self, directory: Directory, cookie: str, query: dict[str, str]) -> Finished:
        """The agent the provider's answer signs in, or Refused saying why."""
        if not cookie:
            raise Refused("expired", "no sign-in cookie (another browser, or cookies blocked)")
        try:
            data = self._open(cookie)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise Refused("expired", "the sign-in cookie is malformed") from None
        tenant, page = str(data["t"]), str(data["p"])
        state = query.get("state", "")
        if not state or not hmac.compare_digest(state, str(data["s"])):
            raise Refused("expired", "the state is not this browser's sign-in")
        if not await self._claim(f"oidc-{hashlib.sha256(state.encode()).hexdigest()}"):
            raise Refused("expired", "this sign-in was used already")
        if query.get("error"):
            raise Refused("refused", f"the provider answered {query['error']}")
        code = query.get("code", "")
        if not code:
            raise Refused("refused", "the provider gave no code")
        config = directory.provider(tenant)
        if config is None:
            raise Refused("unavailable", f"tenant {tenant!r} has no OIDC sign-in now")
        claims = await self._exchange(config, code, str(data["v"]), str(data["r"]), str(data["n"]))
        agent_id = config.agent_id(claims)
        profile = directory.profile(tenant, agent_id) if agent_id else None
        if profile is None:
            raise Refused(
                "unknown",
                f"{config.agent_claim} {claims.get(config.agent_claim)!r} is no agent of {tenant}",
            )
        if profile.disabled:
            raise Refused("disabled", f"agent {profile.agent_id} of {tenant} is disabled")
        return Finished(tenant, profile.agent_id, page)

    async def _exchange(
        self, config: OidcConfig, code: str, verifier: str, redirect_uri: str, nonce: str
    ) -> dict[str, Any]:
        doc = await self.discover(config)
        try:
            client_secret = (
                await asyncio.to_thread(Path(config.client_secret_file).read_text, "utf-8")
            ).strip()
        except OSError as exc:
            logger.error("OIDC client secret of %s unreadable: %s", config.issuer, exc)
            raise Refused("unavailable", "the client secret cannot be read") from None
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {"content-type": "application/x-www-form-urlencoded"}
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if "client_secret_basic" in methods:
            pair = (
                f"{urllib.parse.quote(config.client_id, safe='')}:"
                f"{urllib.parse.quote(client_secret, safe='')}"
            )
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form.update(client_id=config.client_id, client_secret=client_secret)
        answer = await asyncio.to_thread(
            _get_json, doc["token_endpoint"], urllib.parse.urlencode(form).encode(), headers
        )
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise Refused("refused", "the token endpoint gave no id_token")
        return await self.verify_id_token(config, doc, id_token, nonce)

    async def verify_id_token(
        self, config: OidcConfig, doc: dict[str, Any], id_token: str, nonce: str
    ) -> dict[str, Any]:
        try:
            header = json.loads(_unb64(id_token.split(".")[0]))
            kid = header.get("kid") if isinstance(header, dict) else None
        except (ValueError, UnicodeDecodeError):
            raise Refused("refused", "the ID token is malformed") from None
        keys = await self._key_set(doc, kid if isinstance(kid, str) else None)
        try:
            token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                now=lambda: int(self._clock()),
                leeway=60,
                iss={"essential": True, "value": config.issuer},
                aud={"essential": True, "value": config.client_id},
                exp={"essential": True},
                iat={"essential": True},
                sub={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise Refused("refused", f"the ID token does not verify: {exc}") from None
        claims = dict(token.claims)
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != config.client_id:
            raise Refused("refused", "the ID token is for several clients, not azp this one")
        return claims
