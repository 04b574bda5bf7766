"""REGISTER with digest authentication (RFC 3261 section 10 and 22, RFC 2617/7616 MD5 with
qop=auth): agents' phones register as `agent@tenant` (the bare agent id where the gateway serves
one tenant's phones), and a binding is keyed by (tenant, agent id).

What an attacker learns and can reuse is kept to nothing: an unknown user is answered exactly as
a known user with a wrong password; a nonce is bound to the Contact it was issued for, and each
nonce count is accepted once, in increasing order (a replayed digest is answered with a fresh
challenge, stale=true)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from switchboard.voice_gateway.sip.message import NameAddr, SipMessage, SipSyntaxError, Uri
from switchboard.voice_gateway.sip.transport import Peer

NONCE_TTL = 300.0
MIN_EXPIRES, MAX_EXPIRES, DEFAULT_EXPIRES = 30, 3600, 3600
MAX_MISSED_PINGS = 2  # unanswered OPTIONS keepalives in a row before a phone is unregistered
MAX_TRACKED_NONCES = 100_000  # nonce counts remembered (each at most NONCE_TTL)

PhoneKey = tuple[str, str]  # (tenant, agent id)


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
    tenant: str
    agent_id: str
    contact: str  # the phone's Contact URI
    peer: Peer  # where its REGISTER came from (NAT-safe: we send requests back there)
    expires_at: float
    missed_pings: int = 0  # OPTIONS keepalives in a row the phone did not answer

    @property
    def key(self) -> PhoneKey:
        return (self.tenant, self.agent_id)


def _contacts(req: SipMessage) -> str:
    """What a nonce is bound to: the request's Contact URIs (or `*`), without parameters."""
    uris = []
    for value in req.get_all("Contact"):
        value = value.strip()
        try:
            uris.append(value if value == "*" else NameAddr.parse(value).uri)
        except SipSyntaxError:
            uris.append(value)
    return "\n".join(sorted(uris))


class Registrar:
    def __init__(self, realm: str, credentials: Mapping[PhoneKey, str]) -> None:
        self.realm = realm
        self.credentials = dict(credentials)
        self.bindings: dict[PhoneKey, Binding] = {}
        self._secret = secrets.token_bytes(16)
        # A bare agent id names a phone only while one tenant has phones here.
        tenants = {tenant for tenant, _ in self.credentials}
        self._only_tenant = next(iter(tenants)) if len(tenants) == 1 else None
        self._counts: dict[str, tuple[int, float]] = {}  # nonce -> (last nc, expires)
        # Who is not a user still costs the same work as one who is.
        self._decoy = secrets.token_hex(16)

    # ---- user names ---------------------------------------------------------------------------

    def phone_of(self, username: str) -> PhoneKey | None:
        """The (tenant, agent id) a digest user name names: `agent@tenant`, or a bare agent id
        when one tenant has phones here."""
        agent, at, tenant = username.rpartition("@")
        if not at:
            agent, tenant = username, self._only_tenant or ""
        return (tenant, agent) if agent and tenant else None

    # ---- nonces -------------------------------------------------------------------------------

    def _mac(self, stamp: str, salt: str, contacts: str) -> str:
        text = f"{stamp}.{salt}.{contacts}".encode()
        return hmac.new(self._secret, text, hashlib.sha256).hexdigest()[:24]

    def _nonce(self, now: float, contacts: str) -> str:
        stamp, salt = str(int(now)), secrets.token_hex(8)
        return f"{stamp}.{salt}.{self._mac(stamp, salt, contacts)}"

    def _nonce_ok(self, nonce: str, contacts: str, now: float) -> bool:
        """Issued here, for this Contact, within NONCE_TTL."""
        stamp, _, rest = nonce.partition(".")
        salt, _, mac = rest.partition(".")
        try:
            fresh = 0 <= now - float(stamp) < NONCE_TTL
        except ValueError:
            return False
        return hmac.compare_digest(mac, self._mac(stamp, salt, contacts)) and fresh

    def _count_ok(self, nonce: str, nc: str, now: float) -> bool:
        """Take nonce count `nc` for `nonce` if it is higher than any taken before."""
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        last, _ = self._counts.get(nonce, (0, 0.0))
        if count <= last:
            return False
        if len(self._counts) >= MAX_TRACKED_NONCES:
            self._counts = {n: v for n, v in self._counts.items() if v[1] > now}
            if len(self._counts) >= MAX_TRACKED_NONCES:
                return False  # no room to remember it: it must not be replayable either
        self._counts[nonce] = (count, now + NONCE_TTL)
        return True

    # ---- authentication -----------------------------------------------------------------------

    def challenge(self, req: SipMessage, stale: bool = False) -> SipMessage:
        resp = req.response(401, "Unauthorized")
        extra = ", stale=true" if stale else ""
        nonce = self._nonce(time.time(), _contacts(req))
        resp.add(
            "WWW-Authenticate",
            f'Digest realm="{self.realm}", nonce="{nonce}", algorithm=MD5, qop="auth"{extra}',
        )
        return resp

    def authenticate(self, req: SipMessage) -> tuple[PhoneKey | None, SipMessage | None]:
        """The authenticated phone, or the response to send instead (401 or 403); the same
        response whether or not the user exists."""
        header = req.get("Authorization")
        if not header:
            return None, self.challenge(req)
        try:
            p = parse_digest(header)
        except SipSyntaxError:
            return None, self.challenge(req)  # a scheme of its own: offer Digest (22.1)
        now = time.time()
        user, nonce = p.get("username", ""), p.get("nonce", "")
        if p.get("realm") != self.realm:
            return None, req.response(403, "Forbidden")
        if not self._nonce_ok(nonce, _contacts(req), now):
            return None, self.challenge(req, stale=True)
        phone = self.phone_of(user)
        password = self.credentials.get(phone) if phone is not None else None
        ha1 = _md5(f"{user}:{self.realm}:{password if password is not None else self._decoy}")
        ha2 = _md5(f"{req.method}:{p.get('uri', '')}")
        nc, cnonce = p.get("nc", ""), p.get("cnonce", "")
        expected = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        # qop=auth is required: without a nonce count a digest could be replayed unnoticed.
        matches = p.get("qop") == "auth" and hmac.compare_digest(expected, p.get("response", ""))
        if password is None or phone is None or not matches:
            return None, req.response(403, "Forbidden")
        if not self._count_ok(nonce, nc, now):
            return None, self.challenge(req, stale=True)
        return phone, None

    # ---- bindings -----------------------------------------------------------------------------

    def register(self, req: SipMessage, peer: Peer) -> SipMessage:
        # Section 10.2: the To header is the address of record, a SIP or SIPS URI.
        if NameAddr.parse(req.get("To")).uri.split(":", 1)[0].lower() not in ("sip", "sips"):
            return req.response(400, "To is not a SIP or SIPS address of record")
        phone, refusal = self.authenticate(req)
        if refusal is not None:
            return refusal
        assert phone is not None
        tenant, agent_id = phone
        to_user = Uri.parse(NameAddr.parse(req.get("To")).uri).user
        if to_user != agent_id:
            return req.response(403, "Forbidden")
        resp = req.response(200, "OK")
        contacts = req.get_all("Contact")
        header_expires = req.get("Expires")
        now = time.time()
        for value in contacts:
            if value.strip() == "*":
                self.bindings.pop(phone, None)
                continue
            contact = NameAddr.parse(value)
            raw = contact.params.get("expires") or header_expires or str(DEFAULT_EXPIRES)
            if not raw.isdigit():
                return req.response(400, "Malformed Expires")
            expires = int(raw)
            if expires == 0:
                self.bindings.pop(phone, None)
                continue
            if expires < MIN_EXPIRES:
                too_brief = req.response(423, "Interval Too Brief")
                too_brief.add("Min-Expires", str(MIN_EXPIRES))
                return too_brief
            expires = min(expires, MAX_EXPIRES)
            self.bindings[phone] = Binding(tenant, agent_id, contact.uri, peer, now + expires)
            resp.add("Contact", f"<{contact.uri}>;expires={expires}")
        if not contacts and phone in self.bindings:
            b = self.bindings[phone]
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
        if self.bindings.get(binding.key) is binding:
            del self.bindings[binding.key]
            return True
        return False

    def lookup(self, tenant: str, agent_id: str) -> Binding | None:
        """The live binding of `tenant`'s agent `agent_id`, if its phone is registered."""
        key = (tenant, agent_id)
        b = self.bindings.get(key)
        if b is None or b.expires_at < time.time():
            self.bindings.pop(key, None)
            return None
        return b
