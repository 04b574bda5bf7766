"""REGISTER with digest authentication (RFC 3261 section 10 and 22, RFC 2617 MD5 with
qop=auth): agents' phones register with their agent id as the SIP user name."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, SipSyntaxError, Uri
from switchboard.voice_gateway.sip.transport import Peer

NONCE_TTL = 300.0
MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 30, 3600, 3600
MAX_MISSED_PINGS = 2  # unanswered OPTIONS keepalives in a row before a phone is unregistered


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def parse_digest(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipSyntaxError("Unsupported authorization scheme")
    params = {}
    for m in re.finditer(r'([A-Za-z-]+)\s*=\s*("([^"]*)"|[^\s,]+)', rest):
        params[m.group(1).lower()] = m.group(3) if m.group(3) is not None else m.group(2)
    return params


@dataclass
class Binding:
    agent_id: str
    contact: str  # the phone's Contact URI
    peer: Peer  # where its REGISTER came from (NAT-safe: we send requests back there)
    expires_at: float
    missed_pings: int = 0  # OPTIONS keepalives in a row the phone did not answer


class Registrar:
    def __init__(self, realm: str, credentials: dict[str, str]) -> None:
        self.realm = realm
        self.credentials = credentials
        self.bindings: dict[str, Binding] = {}
        self._secret = secrets.token_bytes(16)

    def _nonce(self, now: float) -> str:
        stamp = f"{now:.0f}"
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:16]
        return f"{stamp}.{mac}"

    def _nonce_ok(self, nonce: str, now: float) -> bool:
        stamp, _, mac = nonce.partition(".")
        good = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:16]
        try:
            fresh = now - float(stamp) < NONCE_TTL
        except ValueError:
            return False
        return hmac.compare_digest(mac, good) and fresh

    def challenge(self, req: SipMessage, stale: bool = False) -> SipMessage:
        resp = req.response(401, "Unauthorized")
        extra = ", stale=true" if stale else ""
        resp.add(
            "WWW-Authenticate",
            f'Digest realm="{self.realm}", nonce="{self._nonce(time.time())}", '
            f'algorithm=MD5, qop="auth"{extra}',
        )
        return resp

    def authenticate(self, req: SipMessage) -> tuple[str | None, SipMessage | None]:
        """The authenticated user, or the response to send instead (401 or 403)."""
        header = req.get("Authorization")
        if not header:
            return None, self.challenge(req)
        try:
            p = parse_digest(header)
        except SipSyntaxError as exc:
            return None, req.response(400, exc.reason)
        user, nonce = p.get("username", ""), p.get("nonce", "")
        password = self.credentials.get(user)
        if password is None or p.get("realm") != self.realm:
            return None, req.response(403, "Forbidden")
        if not self._nonce_ok(nonce, time.time()):
            return None, self.challenge(req, stale=True)
        ha1 = _md5(f"{user}:{self.realm}:{password}")
        ha2 = _md5(f"{req.method}:{p.get('uri', '')}")
        if p.get("qop"):
            expected = _md5(f"{ha1}:{nonce}:{p.get('nc', '')}:{p.get('cnonce', '')}:auth:{ha2}")
        else:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        if not hmac.compare_digest(expected, p.get("response", "")):
            return None, req.response(403, "Forbidden")
        return user, None

    def register(self, req: SipMessage, peer: Peer) -> SipMessage:
        user, refusal = self.authenticate(req)
        if refusal is not None:
            return refusal
        assert user is not None
        to_user = Uri.parse(NameAddr.parse(req.get("To")).uri).user
        if to_user != user:
            return req.response(403, "Forbidden")
        resp = req.response(200, "OK")
        contacts = req.get_all("Contact")
        header_expires = req.get("Expires")
        now = time.time()
        for value in contacts:
            if value.strip() == "*":
                self.bindings.pop(user, None)
                continue
            contact = NameAddr.parse(value)
            raw = contact.params.get("expires") or header_expires or str(DEFAULT_EXPIRES)
            if not raw.isdigit():
                return req.response(400, "Malformed Expires")
            expires = int(raw)
            if expires == 0:
                self.bindings.pop(user, None)
                continue
            if expires < MIN_EXPIRES:
                too_brief = req.response(423, "Interval Too Brief")
                too_brief.add("Min-Expires", str(MIN_EXPIRES))
                return too_brief
            expires = min(expires, MAX_EXPIRES)
            self.bindings[user] = Binding(user, contact.uri, peer, now + expires)
            resp.add("Contact", f"<{contact.uri}>;expires={expires}")
        if not contacts and user in self.bindings:
            b = self.bindings[user]
            resp.add("Contact", f"<{b.contact}>;expires={int(b.expires_at - now)}")
        return resp

    def ping_answered(self, binding: Binding) -> None:
        """Any response to a keepalive, even an error, shows the phone is there."""
        binding.missed_pings = 0

    def ping_missed(self, binding: Binding) -> bool:
        """Count a keepalive the phone did not answer; True when that unregistered it
        (`MAX_MISSED_PINGS` in a row)."""
        binding.missed_pings += 1
        return binding.missed_pings >= MAX_MISSED_PINGS and self.unregister(binding)

    def unregister(self, binding: Binding) -> bool:
        """Drop `binding` unless the phone has registered again since (a fresh binding)."""
        if self.bindings.get(binding.agent_id) is binding:
            del self.bindings[binding.agent_id]
            return True
        return False

    def lookup(self, agent_id: str) -> Binding | None:
        b = self.bindings.get(agent_id)
        if b is None or b.expires_at < time.time():
            self.bindings.pop(agent_id, None)
            return None
        return b
