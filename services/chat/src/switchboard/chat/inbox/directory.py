"""The inbox's agents directory: who may sign in to the inbox, with what password, role and profile.

Read from the YAML file named by CHAT_AGENTS_FILE, or the embedded agents.yaml (the demo tenant).
Passwords are stored as scrypt hashes (``scrypt$N$r$p$<salt>$<hash>``, base64); a wrong agent id
and a wrong password get the same answer, and both cost one scrypt.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.errors import InvalidArgument, Unauthenticated
from switchboard.core.events import TENANT_RE

DEFAULT_FILE = Path(__file__).with_name("agents.yaml")
ROLES = ("agent", "supervisor")
UI_LANGUAGES = ("ko", "zh", "en")
DEFAULT_WRAP_UP_CODES = ("resolved", "follow_up", "escalated", "no_answer")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
WRONG = "wrong agent id or password"


class DirectoryError(ValueError):
    """The agents file is malformed; the message names the entry and key."""


@dataclass(frozen=True)
class AgentProfile:
    tenant: str
    agent_id: str
    name: str
    role: str
    password: str
    ui_language: str = "en"
    languages: dict[str, int] = field(default_factory=dict)
    skills: dict[str, int] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "agent_id": self.agent_id,
            "name": self.name,
            "role": self.role,
            "ui_language": self.ui_language,
            "languages": dict(self.languages),
            "skills": dict(self.skills),
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A storable scrypt hash of `password`."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not scrypt$N$r$p$salt$hash")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    return n, r, p, _unb64(parts[4]), _unb64(parts[5])


def check_password(password: str, stored: str) -> bool:
    n, r, p, salt, expected = _parse_hash(stored)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 1024 * 1024
    )
    return hmac.compare_digest(digest, expected)


# Checked against when the agent is unknown, so both failures cost the same.
_DUMMY_HASH = hash_password("switchboard-dummy", b"0123456789abcdef")


def _levels(raw: Any, key: str) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise DirectoryError(f"{key}: must be a mapping of name to level 1-5")
    out: dict[str, int] = {}
    for name, level in raw.items():
        if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 5:
            raise DirectoryError(f"{key}.{name}: must be a whole number from 1 to 5")
        out[str(name)] = level
    return out


@dataclass(frozen=True)
class Directory:
    agents: dict[tuple[str, str], AgentProfile]
    wrap_up_codes: dict[str, tuple[str, ...]]

    def profile(self, tenant: str, agent_id: str) -> AgentProfile | None:
        return self.agents.get((tenant, agent_id))

    def codes(self, tenant: str) -> tuple[str, ...]:
        return self.wrap_up_codes.get(tenant, DEFAULT_WRAP_UP_CODES)

    def verify(self, tenant: Any, agent_id: Any, password: Any) -> AgentProfile:
        """The agent's profile if the password is right; Unauthenticated otherwise."""
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise InvalidArgument("tenant", "is not a valid tenant name")
        if not isinstance(agent_id, str) or not agent_id:
            raise InvalidArgument("agent_id", "is required")
        if not isinstance(password, str) or not password or len(password) > 1024:
            raise InvalidArgument("password", "is required")
        profile = self.agents.get((tenant, agent_id))
        ok = check_password(password, profile.password if profile else _DUMMY_HASH)
        if profile is None or not ok:
            raise Unauthenticated(WRONG)
        return profile

    async def verify_async(self, tenant: Any, agent_id: Any, password: Any) -> AgentProfile:
        # scrypt takes tens of milliseconds by design: keep it off the event loop.
        return await asyncio.to_thread(self.verify, tenant, agent_id, password)


def parse(raw: Any) -> Directory:
    if not isinstance(raw, dict) or not isinstance(raw.get("tenants"), dict):
        raise DirectoryError("tenants: must be a mapping of tenant to its agents")
    agents: dict[tuple[str, str], AgentProfile] = {}
    codes: dict[str, tuple[str, ...]] = {}
    for tenant, body in raw["tenants"].items():
        tenant = str(tenant)
        key = f"tenants.{tenant}"
        if not TENANT_RE.match(tenant):
            raise DirectoryError(f"{key}: {tenant!r} is not a valid tenant name")
        if not isinstance(body, dict) or not isinstance(body.get("agents"), list):
            raise DirectoryError(f"{key}.agents: must be a list")
        wrap = body.get("wrap_up_codes", list(DEFAULT_WRAP_UP_CODES))
        if not isinstance(wrap, list) or not all(isinstance(c, str) and c for c in wrap):
            raise DirectoryError(f"{key}.wrap_up_codes: must be a list of codes")
        codes[tenant] = tuple(wrap)
        for i, entry in enumerate(body["agents"]):
            k = f"{key}.agents[{i}]"
            if not isinstance(entry, dict):
                raise DirectoryError(f"{k}: must be a mapping")
            agent_id = entry.get("id")
            if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
                raise DirectoryError(f"{k}.id: must be 1-64 of A-Z a-z 0-9 . _ -")
            role = entry.get("role", "agent")
            if role not in ROLES:
                raise DirectoryError(f"{k}.role: must be agent or supervisor")
            password = entry.get("password")
            try:
                _parse_hash(str(password))
            except ValueError as exc:
                raise DirectoryError(f"{k}.password: {exc}") from None
            ui = entry.get("ui_language", "en")
            if ui not in UI_LANGUAGES:
                raise DirectoryError(f"{k}.ui_language: must be one of {', '.join(UI_LANGUAGES)}")
            if (tenant, agent_id) in agents:
                raise DirectoryError(f"{k}.id: {agent_id} appears twice")
            agents[(tenant, agent_id)] = AgentProfile(
                tenant=tenant,
                agent_id=agent_id,
                name=str(entry.get("name") or agent_id),
                role=role,
                password=str(password),
                ui_language=ui,
                languages=_levels(entry.get("languages"), f"{k}.languages"),
                skills=_levels(entry.get("skills"), f"{k}.skills"),
            )
    return Directory(agents, codes)


def load(path: str | Path | None = None) -> Directory:
    """The file at `path`, else the embedded demo directory."""
    source = Path(path) if path else DEFAULT_FILE
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DirectoryError(f"CHAT_AGENTS_FILE: cannot read {source}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DirectoryError(f"CHAT_AGENTS_FILE: not YAML: {exc}") from None
    return parse(raw)


if __name__ == "__main__":  # pragma: no cover - a helper for operators
    import getpass

    if sys.argv[1:] != ["hash"]:
        sys.exit("usage: python -m switchboard.chat.inbox.directory hash")
    print(hash_password(getpass.getpass("password: ")))
