"""Mailboxes and their routing rules, from YAML (EMAIL_CONFIG_FILE) or the embedded default."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.errors import InvalidArgument
from switchboard.core.events import validate_tenant


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int = 143
    username: str = ""
    password: str = ""
    folder: str = "INBOX"
    security: str = "none"  # none or tls (implicit TLS, port 993)
    after_ingest: str = "flag"  # flag (\Seen + $Switchboard), move, none
    move_to: str = "Switchboard"


@dataclass(frozen=True)
class Route:
    address: str  # an address or a glob, e.g. *@kr.example.com
    tenant: str = ""
    queue: str = ""
    skills: tuple[str, ...] = ()
    language: str = ""

    def matches(self, address: str) -> bool:
        return fnmatch.fnmatchcase(address.lower(), self.address.lower())


@dataclass(frozen=True)
class SkillRule:
    skill: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Mailbox:
    name: str
    tenant: str
    address: str
    display_name: str = ""
    queue: str = "email"
    imap: ImapConfig | None = None
    routes: tuple[Route, ...] = ()
    skills: tuple[SkillRule, ...] = ()
    priority_keywords: tuple[str, ...] = ()
    auto_acknowledge: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2] or "switchboard.local"

    def claims(self, address: str) -> bool:
        """Whether mail to `address` (plus-addressing ignored) belongs to this mailbox."""
        plain = strip_plus(address)
        if plain == self.address.lower() or plain in (a.lower() for a in self.aliases):
            return True
        return any(r.matches(plain) for r in self.routes)


@dataclass(frozen=True)
class EmailConfig:
    mailboxes: tuple[Mailbox, ...] = ()
    catch_all: str = ""
    own_addresses: frozenset[str] = field(default_factory=frozenset)

    def mailbox(self, name: str) -> Mailbox:
        for m in self.mailboxes:
            if m.name == name:
                return m
        raise InvalidArgument("mailbox", f"no mailbox named {name!r}")

    def for_recipient(self, address: str) -> Mailbox | None:
        for m in self.mailboxes:
            if m.claims(address):
                return m
        return self.mailbox(self.catch_all) if self.catch_all else None

    def for_tenant(self, tenant: str) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.tenant == tenant), None)


def strip_plus(address: str) -> str:
    local, _, domain = address.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if domain else local


def _tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def _imap(raw: dict[str, Any] | None) -> ImapConfig | None:
    if not raw:
        return None
    password = str(raw.get("password", ""))
    if raw.get("password_env"):
        password = os.environ.get(str(raw["password_env"]), "")
    after = str(raw.get("after_ingest", "flag"))
    if after not in ("flag", "move", "none"):
        raise InvalidArgument("imap.after_ingest", "must be flag, move or none")
    security = str(raw.get("security", "none"))
    if security not in ("none", "tls"):
        raise InvalidArgument("imap.security", "must be none or tls (aioimaplib has no STARTTLS)")
    return ImapConfig(
        host=str(raw.get("host", "127.0.0.1")),
        port=int(raw.get("port", 993 if security == "tls" else 143)),
        username=str(raw.get("username", "")),
        password=password,
        folder=str(raw.get("folder", "INBOX")),
        security=security,
        after_ingest=after,
        move_to=str(raw.get("move_to", "Switchboard")),
    )


def parse(data: dict[str, Any]) -> EmailConfig:
    """Build the configuration from parsed YAML, raising InvalidArgument naming a bad field."""
    boxes: list[Mailbox] = []
    for i, raw in enumerate(data.get("mailboxes") or []):
        name = str(raw.get("name") or f"mailbox-{i}")
        tenant = str(raw.get("tenant", ""))
        validate_tenant(tenant)
        address = str(raw.get("address", "")).lower()
        if "@" not in address:
            raise InvalidArgument(f"mailboxes[{i}].address", "must be an email address")
        routes = tuple(
            Route(
                address=str(r["address"]),
                tenant=str(r.get("tenant", "")),
                queue=str(r.get("queue", "")),
                skills=_tuple(r.get("skills")),
                language=str(r.get("language", "")),
            )
            for r in raw.get("routes") or []
        )
        for r in routes:
            if r.tenant:
                validate_tenant(r.tenant)
        skills = tuple(
            SkillRule(str(s["skill"]), tuple(k.lower() for k in _tuple(s.get("keywords"))))
            for s in raw.get("skills") or []
        )
        boxes.append(
            Mailbox(
                name=name,
                tenant=tenant,
                address=address,
                display_name=str(raw.get("display_name", "")),
                queue=str(raw.get("queue", "email")),
                imap=_imap(raw.get("imap")),
                routes=routes,
                skills=skills,
                priority_keywords=tuple(k.lower() for k in _tuple(raw.get("priority_keywords"))),
                auto_acknowledge=bool(raw.get("auto_acknowledge", False)),
                aliases=_tuple(raw.get("aliases")),
            )
        )
    names = [b.name for b in boxes]
    if len(set(names)) != len(names):
        raise InvalidArgument("mailboxes", "mailbox names must be unique")
    catch_all = str(data.get("catch_all") or "")
    if catch_all and catch_all not in names:
        raise InvalidArgument("catch_all", f"no mailbox named {catch_all!r}")
    own = frozenset(b.address for b in boxes) | frozenset(
        a.lower() for b in boxes for a in b.aliases
    )
    return EmailConfig(tuple(boxes), catch_all, own)


def load(path: str | None = None) -> EmailConfig:
    """The configuration in `path`, or the embedded default."""
    if path:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = (
            resources.files("switchboard.email_ingest").joinpath("default_config.yaml").read_text()
        )
    return parse(yaml.safe_load(text) or {})
