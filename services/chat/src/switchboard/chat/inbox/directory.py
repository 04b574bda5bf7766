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
from urllib.parse import urlsplit

import yaml

from switchboard.core import roles
from switchboard.core.config import ConfigError, ConfigReader, compose, is_null
from switchboard.core.errors import InvalidArgument, Unauthenticated
from switchboard.core.events import TENANT_RE

DEFAULT_FILE = Path(__file__).with_name("agents.yaml")
# The roles that sign in here (switchboard.core.roles): those who work at the desk (an agent, a
# team lead, a supervisor: the inbox), QA evaluators (the QA screen only), and administrators
# (the admin console).
ROLES = (*roles.DESK, roles.QA, roles.ADMIN)
# The channels an agent's capacity names (the router's), and the most contacts one may hold.
CHANNELS = ("voice", "chat", "email", "fax")
MAX_CAPACITY = 50
UI_LANGUAGES = ("ko", "zh", "en", "ja")
DEFAULT_WRAP_UP_CODES = ("resolved", "follow_up", "escalated", "no_answer")
AGENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 16384, 8, 1
WRONG = "wrong agent id or password"
# A tenant's OIDC sign-in (its company directory): which ID token claim names the agent.
OIDC_CLAIMS = ("preferred_username", "email", "sub", "upn")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_LOOPBACK = ("localhost", "127.0.0.1", "::1")


DirectoryError = ConfigError  # the agents file is malformed: file, line and field


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
    # Contacts at once per channel; a channel not named takes the tenant's router default.
    capacity: dict[str, int] = field(default_factory=dict)
    disabled: bool = False  # kept on file, but may not sign in
    team: str = ""  # the id of the tenant's team the agent is in (none: "")

    def to_wire(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "agent_id": self.agent_id,
            "name": self.name,
            "role": self.role,
            "ui_language": self.ui_language,
            "languages": dict(self.languages),
            "skills": dict(self.skills),
            "capacity": dict(self.capacity),
            "disabled": self.disabled,
            "team": self.team,
        }


@dataclass(frozen=True)
class Team:
    """A named group of a tenant's agents, led by one or more of its agents (the team leads)."""

    team_id: str
    name: str
    leads: tuple[str, ...] = ()

    def to_yaml(self) -> dict[str, Any]:
        return {"id": self.team_id, "name": self.name, "leads": list(self.leads)}


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


def _levels(r: ConfigReader, node: yaml.Node, key: str) -> dict[str, int]:
    """A mapping of name to level 1-5."""
    if is_null(node):
        return {}
    return {
        name: r.integer(value, f"{key}.{name}", 1, 5)
        for name, (_, value) in r.mapping(node, key, set()).items()
    }


@dataclass(frozen=True)
class OidcConfig:
    """A tenant's sign-in through its company's OpenID Connect provider."""

    name: str  # the company, as the button says: "Sign in with <name>"
    issuer: str  # https://login.example.com/realms/acme (discovery is under it)
    client_id: str
    client_secret_file: str  # a file (a mounted Secret) holding the client secret
    agent_claim: str = "preferred_username"  # the ID token claim that is the agent id
    email_domain: str = ""  # when set, only addresses of this domain (a verified email)

    def agent_id(self, claims: dict[str, Any]) -> str | None:
        """The agent id the ID token's `claims` name, or None if they name none (or an email
        of another domain)."""
        if self.email_domain:
            email = claims.get("email")
            if not isinstance(email, str) or claims.get("email_verified") is False:
                return None
            if email.rpartition("@")[2].lower() != self.email_domain:
                return None
        value = claims.get(self.agent_claim)
        if not isinstance(value, str):
            return None
        if self.agent_claim == "email":
            local, _, domain = value.rpartition("@")
            if domain.lower() != self.email_domain:
                return None
            value = local
        return value if AGENT_ID_RE.match(value) else None

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret_file": self.client_secret_file,
            "agent_claim": self.agent_claim,
        }
        if self.email_domain:
            out["email_domain"] = self.email_domain
        return out


@dataclass(frozen=True)
class Directory:
    agents: dict[tuple[str, str], AgentProfile]
    wrap_up_codes: dict[str, tuple[str, ...]]
    oidc: dict[str, OidcConfig] = field(default_factory=dict)
    teams: dict[str, tuple[Team, ...]] = field(default_factory=dict)  # tenant -> its teams

    def profile(self, tenant: str, agent_id: str) -> AgentProfile | None:
        return self.agents.get((tenant, agent_id))

    def codes(self, tenant: str) -> tuple[str, ...]:
        return self.wrap_up_codes.get(tenant, DEFAULT_WRAP_UP_CODES)

    def provider(self, tenant: str) -> OidcConfig | None:
        """The tenant's OIDC sign-in, if it has one."""
        return self.oidc.get(tenant)

    def teams_of(self, tenant: str) -> tuple[Team, ...]:
        """The tenant's teams, in the file's order."""
        return self.teams.get(tenant, ())

    def led_by(self, tenant: str, agent_id: str) -> list[str]:
        """The ids of the tenant's teams `agent_id` leads."""
        return [t.team_id for t in self.teams_of(tenant) if agent_id in t.leads]

    def team_map(self, tenant: str) -> dict[str, str]:
        """The tenant's agents in a team: agent id -> team id."""
        return {a: p.team for (t, a), p in self.agents.items() if t == tenant and p.team}

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
        if profile is None or not ok or profile.disabled:
            raise Unauthenticated(WRONG)
        return profile

    def tenant(self, tenant: str) -> Directory:
        """Only `tenant`'s part of the directory."""
        return Directory(
            {k: v for k, v in self.agents.items() if k[0] == tenant},
            {tenant: self.codes(tenant)},
            {tenant: self.oidc[tenant]} if tenant in self.oidc else {},
            {tenant: self.teams[tenant]} if tenant in self.teams else {},
        )

    def with_tenant(self, tenant: str, part: Directory) -> Directory:
        """This directory with `tenant`'s part replaced by `part`'s."""
        agents = {k: v for k, v in self.agents.items() if k[0] != tenant}
        agents.update({k: v for k, v in part.agents.items() if k[0] == tenant})
        oidc = {t: c for t, c in self.oidc.items() if t != tenant}
        if tenant in part.oidc:
            oidc[tenant] = part.oidc[tenant]
        teams = {t: v for t, v in self.teams.items() if t != tenant}
        if part.teams_of(tenant):
            teams[tenant] = part.teams_of(tenant)
        return Directory(agents, {**self.wrap_up_codes, tenant: part.codes(tenant)}, oidc, teams)

    def tenants(self) -> list[str]:
        return sorted({*self.wrap_up_codes, *(t for t, _ in self.agents)})

    async def verify_async(self, tenant: Any, agent_id: Any, password: Any) -> AgentProfile:
        # scrypt takes tens of milliseconds by design: keep it off the event loop.
        return await asyncio.to_thread(self.verify, tenant, agent_id, password)


_AGENT_FIELDS = {
    "id",
    "name",
    "role",
    "ui_language",
    "password",
    "languages",
    "skills",
    "capacity",
    "disabled",
    "team",
}


def _capacity(r: ConfigReader, node: yaml.Node, key: str) -> dict[str, int]:
    """A mapping of channel to the contacts an agent may hold at once on it."""
    if is_null(node):
        return {}
    out: dict[str, int] = {}
    for ch, (_, value) in r.mapping(node, key, set(CHANNELS)).items():
        out[ch] = r.integer(value, f"{key}.{ch}", 0, 1 if ch == "voice" else MAX_CAPACITY)
    return out


def _agent(
    r: ConfigReader, tenant: str, node: yaml.Node, k: str, teams: dict[str, Team]
) -> AgentProfile:
    f = {name: value for name, (_, value) in r.mapping(node, k, _AGENT_FIELDS).items()}
    if "id" not in f:
        raise r.fail(node, f"{k}.id", "is required")
    agent_id = str(r.scalar(f["id"], f"{k}.id"))
    if not AGENT_ID_RE.match(agent_id):
        raise r.fail(f["id"], f"{k}.id", "must be 1-64 of A-Z a-z 0-9 . _ -")
    role = r.string(f["role"], f"{k}.role") if "role" in f else "agent"
    if role not in ROLES:
        raise r.fail(f["role"], f"{k}.role", f"must be one of {', '.join(ROLES)}")
    if "password" not in f:
        raise r.fail(node, f"{k}.password", "is required (an scrypt hash)")
    password = str(r.scalar(f["password"], f"{k}.password"))
    try:
        _parse_hash(password)
    except ValueError as exc:
        raise r.fail(f["password"], f"{k}.password", str(exc)) from None
    ui = r.string(f["ui_language"], f"{k}.ui_language") if "ui_language" in f else "en"
    if ui not in UI_LANGUAGES:
        raise r.fail(
            f["ui_language"], f"{k}.ui_language", f"must be one of {', '.join(UI_LANGUAGES)}"
        )
    team = ""
    if "team" in f and not is_null(f["team"]):
        team = str(r.scalar(f["team"], f"{k}.team"))
        if team not in teams:
            known = ", ".join(teams) or "none: add it under teams"
            raise r.fail(f["team"], f"{k}.team", f"unknown team {team!r} (the tenant's: {known})")
    return AgentProfile(
        tenant=tenant,
        agent_id=agent_id,
        name=r.string(f["name"], f"{k}.name") if "name" in f else agent_id,
        role=role,
        password=password,
        ui_language=ui,
        languages=_levels(r, f["languages"], f"{k}.languages") if "languages" in f else {},
        skills=_levels(r, f["skills"], f"{k}.skills") if "skills" in f else {},
        capacity=_capacity(r, f["capacity"], f"{k}.capacity") if "capacity" in f else {},
        disabled=r.boolean(f["disabled"], f"{k}.disabled") if "disabled" in f else False,
        team=team,
    )


_TEAM_FIELDS = {"id", "name", "leads"}


def _teams(r: ConfigReader, node: yaml.Node, key: str) -> tuple[dict[str, Team], dict[str, Any]]:
    """The tenant's teams by id, and each lead's node (checked once the agents are read)."""
    teams: dict[str, Team] = {}
    lead_nodes: dict[str, Any] = {}
    if is_null(node):
        return teams, lead_nodes
    for i, item in enumerate(r.seq(node, key)):
        k = f"{key}[{i}]"
        f = {name: value for name, (_, value) in r.mapping(item, k, _TEAM_FIELDS).items()}
        if "id" not in f:
            raise r.fail(item, f"{k}.id", "is required")
        team_id = str(r.scalar(f["id"], f"{k}.id"))
        if not AGENT_ID_RE.match(team_id):
            raise r.fail(f["id"], f"{k}.id", "must be 1-64 of A-Z a-z 0-9 . _ -")
        if team_id in teams:
            raise r.fail(f["id"], f"{k}.id", f"{team_id} appears twice")
        name = r.string(f["name"], f"{k}.name").strip() if "name" in f else team_id
        if not name or len(name) > 80:
            raise r.fail(f.get("name", item), f"{k}.name", "must be 1-80 characters")
        leads: list[str] = []
        if "leads" in f and not is_null(f["leads"]):
            for j, lead in enumerate(r.seq(f["leads"], f"{k}.leads")):
                lead_id = str(r.scalar(lead, f"{k}.leads[{j}]"))
                if lead_id in leads:
                    raise r.fail(lead, f"{k}.leads[{j}]", f"{lead_id} appears twice")
                leads.append(lead_id)
                lead_nodes[f"{k}.leads[{j}]"] = (lead, lead_id)
        teams[team_id] = Team(team_id, name, tuple(leads))
    return teams, lead_nodes


_OIDC_FIELDS = {"name", "issuer", "client_id", "client_secret_file", "agent_claim", "email_domain"}


def _issuer(r: ConfigReader, node: yaml.Node, k: str) -> str:
    issuer = r.string(node, k).rstrip("/")
    parts = urlsplit(issuer)
    loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
    if parts.scheme != "https" and not loopback:
        raise r.fail(node, k, "must be an https:// URL (http:// only for localhost)")
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise r.fail(node, k, "must be the provider's issuer URL, without query or fragment")
    return issuer


def _oidc(r: ConfigReader, node: yaml.Node, k: str) -> OidcConfig:
    f = {name: value for name, (_, value) in r.mapping(node, k, _OIDC_FIELDS).items()}
    for required in ("name", "issuer", "client_id", "client_secret_file"):
        if required not in f:
            raise r.fail(node, f"{k}.{required}", "is required")
    name = r.string(f["name"], f"{k}.name").strip()
    if not name or len(name) > 80:
        raise r.fail(f["name"], f"{k}.name", "must be 1-80 characters (the company's name)")
    client_id = str(r.scalar(f["client_id"], f"{k}.client_id"))
    if not client_id or len(client_id) > 255:
        raise r.fail(f["client_id"], f"{k}.client_id", "must be 1-255 characters")
    secret_file = r.string(f["client_secret_file"], f"{k}.client_secret_file")
    if not secret_file.startswith("/"):
        raise r.fail(f["client_secret_file"], f"{k}.client_secret_file", "must be an absolute path")
    claim = r.string(f["agent_claim"], f"{k}.agent_claim") if "agent_claim" in f else None
    if claim is not None and claim not in OIDC_CLAIMS:
        raise r.fail(
            f["agent_claim"], f"{k}.agent_claim", f"must be one of {', '.join(OIDC_CLAIMS)}"
        )
    domain = ""
    if "email_domain" in f:
        domain = r.string(f["email_domain"], f"{k}.email_domain").lower()
        if not _DOMAIN.match(domain):
            raise r.fail(
                f["email_domain"], f"{k}.email_domain", "must be a domain name (example.com)"
            )
    if claim == "email" and not domain:
        raise r.fail(
            node,
            f"{k}.email_domain",
            "is required when agent_claim is email (the agent id is the address's part before @)",
        )
    return OidcConfig(
        name=name,
        issuer=_issuer(r, f["issuer"], f"{k}.issuer"),
        client_id=client_id,
        client_secret_file=secret_file,
        agent_claim=claim or "preferred_username",
        email_domain=domain,
    )


def load_text(text: str, source: str = "agents.yaml") -> Directory:
    """Parse and validate a directory's text; a ConfigError names file, line and field."""
    r = ConfigReader(source)
    root = r.mapping(compose(text, source), "", {"tenants"})
    if "tenants" not in root:
        raise ConfigError(source, 1, "tenants", "is required: a mapping of tenant to its agents")
    agents: dict[tuple[str, str], AgentProfile] = {}
    codes: dict[str, tuple[str, ...]] = {}
    oidc: dict[str, OidcConfig] = {}
    teams: dict[str, tuple[Team, ...]] = {}
    for tenant, (knode, body) in r.mapping(root["tenants"][1], "tenants", set()).items():
        key = f"tenants.{tenant}"
        if not TENANT_RE.match(tenant):
            raise r.fail(knode, key, f"{tenant!r} is not a valid tenant name")
        f = {
            name: value
            for name, (_, value) in r.mapping(
                body, key, {"agents", "wrap_up_codes", "oidc", "teams"}
            ).items()
        }
        if "agents" not in f:
            raise r.fail(body, f"{key}.agents", "is required: a list")
        codes[tenant] = (
            r.strings(f["wrap_up_codes"], f"{key}.wrap_up_codes", _CODE)
            if "wrap_up_codes" in f
            else DEFAULT_WRAP_UP_CODES
        )
        if "oidc" in f and not is_null(f["oidc"]):
            oidc[tenant] = _oidc(r, f["oidc"], f"{key}.oidc")
        tenant_teams, lead_nodes = (
            _teams(r, f["teams"], f"{key}.teams") if "teams" in f else ({}, {})
        )
        for i, node in enumerate(r.seq(f["agents"], f"{key}.agents")):
            k = f"{key}.agents[{i}]"
            profile = _agent(r, tenant, node, k, tenant_teams)
            if (tenant, profile.agent_id) in agents:
                raise r.fail(node, f"{k}.id", f"{profile.agent_id} appears twice")
            agents[(tenant, profile.agent_id)] = profile
        for path, (lead, lead_id) in lead_nodes.items():
            if (tenant, lead_id) not in agents:
                raise r.fail(lead, path, f"{lead_id} is not an agent of {tenant}")
        if tenant_teams:
            teams[tenant] = tuple(tenant_teams.values())
    return Directory(agents, codes, oidc, teams)


def _agent_yaml(p: AgentProfile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": p.agent_id,
        "name": p.name,
        "role": p.role,
        "ui_language": p.ui_language,
        "password": p.password,
    }
    for key in ("languages", "skills", "capacity"):
        if getattr(p, key):
            out[key] = dict(getattr(p, key))
    if p.disabled:
        out["disabled"] = True
    if p.team:
        out["team"] = p.team
    return out


def dump(directory: Directory, tenants: list[str] | None = None) -> str:
    """The directory (or those `tenants` of it) as the agents file's YAML: `load_text` of it
    gives the same directory back."""
    body: dict[str, Any] = {}
    for tenant in tenants if tenants is not None else directory.tenants():
        agents = [p for (t, _), p in directory.agents.items() if t == tenant]
        body[tenant] = {"wrap_up_codes": list(directory.codes(tenant))}
        provider = directory.provider(tenant)
        if provider is not None:
            body[tenant]["oidc"] = provider.to_yaml()
        if directory.teams_of(tenant):
            body[tenant]["teams"] = [t.to_yaml() for t in directory.teams_of(tenant)]
        body[tenant]["agents"] = [_agent_yaml(p) for p in agents]
    return yaml.safe_dump(
        {"tenants": body}, allow_unicode=True, sort_keys=False, default_flow_style=None
    )


def load(path: str | Path | None = None) -> Directory:
    """The file at `path`, else the embedded demo directory."""
    source = Path(path) if path else DEFAULT_FILE
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(source), 1, "(file)", f"cannot be read: {exc.strerror}") from None
    return load_text(text, str(path) if path else "switchboard/chat/inbox/agents.yaml")


if __name__ == "__main__":  # pragma: no cover - a helper for operators
    import getpass

    if sys.argv[1:] != ["hash"]:
        sys.exit("usage: python -m switchboard.chat.inbox.directory hash")
    print(hash_password(getpass.getpass("password: ")))
