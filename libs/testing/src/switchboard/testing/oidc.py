"""A real OpenID Connect provider for tests: a company's directory that the platform signs its
agents in through. It serves, over HTTP on a free port of 127.0.0.1:

- ``/.well-known/openid-configuration`` (discovery) and ``/jwks`` (its RSA signing key);
- ``/authorize``: the Authorization Code flow with PKCE (S256 only), consenting at once as the
  configured `user` (a dict of claims), redirecting to a registered redirect URI only;
- ``/token``: client_secret_basic, a code used once, the PKCE verifier checked, and an ID token
  signed with joserfc (``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``nonce`` and the user's
  claims).

A test makes it misbehave as a hostile or broken provider would: `claims` overrides (a wrong
``aud``, ``nonce``, an ``exp`` in the past) and `forge` (signed by a key not in its JWKS).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    user: dict[str, Any]


@dataclass
class OidcProvider:
    # client id -> (client secret, registered redirect URIs; empty: any)
    clients: dict[str, tuple[str, list[str]]]
    user: dict[str, Any]  # the signed-in user's claims; must hold "sub"
    claims: dict[str, Any] = field(default_factory=dict)  # overrides of the next ID tokens
    forge: bool = False  # sign with a key the JWKS does not have
    issued: list[dict[str, Any]] = field(default_factory=list)  # the ID tokens' claims
    _codes: dict[str, _Code] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig"})
        self.forger = RSAKey.generate_key(2048, parameters={"kid": "test-1", "use": "sig"})

    @property
    def issuer(self) -> str:
        assert self._server is not None, "start() the provider first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                provider._get(self)

            def do_POST(self) -> None:
                provider._post(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP ----------------------------------------------------------------------------

    def _json(self, h: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("content-type", "application/json")
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _get(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        if url.path == "/.well-known/openid-configuration":
            self._json(
                h,
                200,
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": self.issuer + "/authorize",
                    "token_endpoint": self.issuer + "/token",
                    "jwks_uri": self.issuer + "/jwks",
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
                },
            )
        elif url.path == "/jwks":
            self._json(h, 200, {"keys": [self.key.as_dict(private=False)]})
        elif url.path == "/authorize":
            self._authorize(h, {k: v[0] for k, v in parse_qs(url.query).items()})
        else:
            self._json(h, 404, {"error": "not_found"})

    def _authorize(self, h: BaseHTTPRequestHandler, q: dict[str, str]) -> None:
        client = self.clients.get(q.get("client_id", ""))
        redirect = q.get("redirect_uri", "")
        if client is None or (client[1] and redirect not in client[1]):
            self._json(h, 400, {"error": "invalid_client_or_redirect_uri"})
            return
        if (
            q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or not q.get("code_challenge")
            or "openid" not in q.get("scope", "").split()
        ):
            back = {"error": "invalid_request", "state": q.get("state", "")}
        else:
            code = secrets.token_urlsafe(24)
            self._codes[code] = _Code(
                q["client_id"], redirect, q["code_challenge"], q.get("nonce", ""), dict(self.user)
            )
            back = {"code": code, "state": q.get("state", "")}
        h.send_response(302)
        h.send_header("location", f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(back)}")
        h.send_header("content-length", "0")
        h.end_headers()

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        if urlsplit(h.path).path != "/token":
            self._json(h, 404, {"error": "not_found"})
            return
        length = int(h.headers.get("content-length") or 0)
        form = {k: v[0] for k, v in parse_qs(h.rfile.read(length).decode()).items()}
        auth = h.headers.get("authorization", "")
        try:
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            client_id, secret = "", ""
        client = self.clients.get(client_id)
        if not auth.startswith("Basic ") or client is None or client[0] != secret:
            self._json(h, 401, {"error": "invalid_client"})
            return
        code = self._codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if (
            form.get("grant_type") != "authorization_code"
            or code is None
            or code.client_id != client_id
            or code.redirect_uri != form.get("redirect_uri")
            or digest.decode().rstrip("=") != code.challenge
        ):
            self._json(h, 400, {"error": "invalid_grant"})
            return
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": code.nonce,
            **code.user,
            **self.claims,
        }
        self.issued.append(claims)
        key = self.forger if self.forge else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "test-1"}, claims, key)
        self._json(
            h,
            200,
            {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "expires_in": 300,
                "id_token": id_token,
            },
        )
