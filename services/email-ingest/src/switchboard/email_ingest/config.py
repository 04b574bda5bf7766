"""Mailboxes and their routing rules, from YAML (EMAIL_CONFIG_FILE) or the embedded default; an
error names the file, the line and the field (switchboard.core.config)."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.config import ConfigError, ConfigReader, compose, is_null
from switchboard.core.errors import InvalidArgument
from switchboard.core.events import TENANT_RE

__all__ = ["ConfigError", "EmailConfig", "ImapConfig", "Mailbox", "Route", "SkillRule", "load"]


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

    @property
    def domains(self) -> frozenset[str]:
        """The domains its address, aliases and routes name (a route's domain is literal)."""
        addresses = (self.address, *self.aliases, *(r.address for r in self.routes))
        return frozenset(a.rpartition("@")[2].lower() for a in addresses if "@" in a)

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
        """The mailbox mail to `address` belongs to; the catch-all takes only the other
        addresses of a domain some mailbox serves (so no mail for foreign domains is taken)."""
        for m in self.mailboxes:
            if m.claims(address):
                return m
        if self.catch_all and self.serves_domain(address):
            return self.mailbox(self.catch_all)
        return None

    def serves_domain(self, address: str) -> bool:
        """Whether `address` is in a domain of a mailbox's address, alias or route."""
        domain = strip_plus(address).rpartition("@")[2]
        return bool(domain) and any(domain in m.domains for m in self.mailboxes)

    def for_tenant(self, tenant: str) -> Mailbox | None:
        return next((m for m in self.mailboxes if m.tenant == tenant), None)


def strip_plus(address: str) -> str:
    local, _, domain = address.strip().lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}" if domain else local


_MAILBOX_FIELDS = {
    "name",
    "tenant",
    "address",
    "display_name",
    "queue",
    "imap",
    "routes",
    "skills",
    "priority_keywords",
    "auto_acknowledge",
    "aliases",
}
_IMAP_FIELDS = {
    "host",
    "port",
    "username",
    "password",
    "password_env",
    "folder",
    "security",
    "after_ingest",
    "move_to",
}
_ROUTE_FIELDS = {"address", "tenant", "queue", "skills", "language"}
_SKILL_FIELDS = {"skill", "keywords"}


class _Fields:
    """One mapping of the file, read field by field with its path for errors."""

    def __init__(self, r: ConfigReader, node: yaml.Node, path: str, allowed: set[str]) -> None:
        self.r, self.path = r, path
        self.node = node
        self.fields = r.mapping(node, path, allowed)

    def __contains__(self, name: str) -> bool:
        return name in self.fields and not is_null(self.fields[name][1])

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def value(self, name: str) -> yaml.Node:
        return self.fields[name][1]

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        if name not in self:
            if required:
                raise self.r.fail(self.node, self.where(name), "is required")
            return default
        value = self.r.scalar(self.value(name), self.where(name))
        if isinstance(value, bool | dict | list) or value is None:
            raise self.r.fail(self.value(name), self.where(name), "must be a single value")
        return str(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...], why: str = "") -> str:
        value = self.text(name, default)
        if value not in choices:
            raise self.r.fail(
                self.value(name), self.where(name), f"must be {' or '.join(choices)}{why}"
            )
        return value

    def texts(self, name: str, lower: bool = False) -> tuple[str, ...]:
        """A list of values (or one value) as a tuple."""
        if name not in self:
            return ()
        node, where = self.value(name), self.where(name)
        nodes = self.r.seq(node, where) if isinstance(node, yaml.SequenceNode) else [node]
        items = []
        for i, item in enumerate(nodes):
            value = self.r.scalar(item, f"{where}[{i}]")
            if isinstance(value, bool | dict | list) or value is None:
                raise self.r.fail(item, f"{where}[{i}]", "must be a single value")
            items.append(str(value).lower() if lower else str(value))
        return tuple(items)

    def tenant(self, name: str, required: bool) -> str:
        tenant = self.text(name, required=required)
        if tenant and not TENANT_RE.match(tenant):
            raise self.r.fail(
                self.value(name), self.where(name), f"{tenant!r} is not a tenant name"
            )
        return tenant

    def items(self, name: str) -> list[tuple[yaml.Node, str]]:
        if name not in self:
            return []
        return [
            (node, f"{self.where(name)}[{i}]")
            for i, node in enumerate(self.r.seq(self.value(name), self.where(name)))
        ]


def _imap(f: _Fields) -> ImapConfig | None:
    if "imap" not in f:
        return None
    raw = _Fields(f.r, f.value("imap"), f.where("imap"), _IMAP_FIELDS)
    password = raw.text("password")
    if "password_env" in raw:
        password = os.environ.get(raw.text("password_env"), "")
    security = raw.choice("security", "none", ("none", "tls"), " (aioimaplib has no STARTTLS)")
    port = raw.r.integer(raw.value("port"), raw.where("port"), 1, 65535) if "port" in raw else 0
    return ImapConfig(
        host=raw.text("host", "127.0.0.1"),
        port=port or (993 if security == "tls" else 143),
        username=raw.text("username"),
        password=password,
        folder=raw.text("folder", "INBOX"),
        security=security,
        after_ingest=raw.choice("after_ingest", "flag", ("flag", "move", "none")),
        move_to=raw.text("move_to", "Switchboard"),
    )


def _mailbox(r: ConfigReader, node: yaml.Node, path: str, i: int) -> Mailbox:
    f = _Fields(r, node, path, _MAILBOX_FIELDS)
    address = f.text("address", required=True).lower()
    if "@" not in address:
        raise r.fail(f.value("address"), f.where("address"), "must be an email address")
    routes = []
    for rnode, rpath in f.items("routes"):
        route = _Fields(r, rnode, rpath, _ROUTE_FIELDS)
        local, at, domain = route.text("address", required=True).rpartition("@")
        if not at or not local or not domain or any(c in domain for c in "*?[]"):
            raise r.fail(
                route.value("address"),
                route.where("address"),
                "must be local-part@domain with a literal domain (a glob only before the @), "
                "so no mail for other domains is taken in",
            )
        routes.append(
            Route(
                address=route.text("address", required=True),
                tenant=route.tenant("tenant", required=False),
                queue=route.text("queue"),
                skills=route.texts("skills"),
                language=route.text("language"),
            )
        )
    skills = []
    for snode, spath in f.items("skills"):
        rule = _Fields(r, snode, spath, _SKILL_FIELDS)
        skills.append(SkillRule(rule.text("skill", required=True), rule.texts("keywords", True)))
    acknowledge = (
        r.boolean(f.value("auto_acknowledge"), f.where("auto_acknowledge"))
        if "auto_acknowledge" in f
        else False
    )
    return Mailbox(
        name=f.text("name", f"mailbox-{i}"),
        tenant=f.tenant("tenant", required=True),
        address=address,
        display_name=f.text("display_name"),
        queue=f.text("queue", "email"),
        imap=_imap(f),
        routes=tuple(routes),
        skills=tuple(skills),
        priority_keywords=f.texts("priority_keywords", lower=True),
        auto_acknowledge=acknowledge,
        aliases=f.texts("aliases"),
    )


def load_text(text: str, source: str = "email.yaml") -> EmailConfig:
    """Parse and validate a configuration's text; a ConfigError names file, line and field."""
    r = ConfigReader(source)
    node = compose(text, source)
    root = _Fields(r, node, "", {"mailboxes", "catch_all"})
    boxes: list[Mailbox] = []
    for i, (mnode, mpath) in enumerate(root.items("mailboxes")):
        box = _mailbox(r, mnode, mpath, i)
        if any(b.name == box.name for b in boxes):
            raise r.fail(mnode, f"{mpath}.name", f"another mailbox is named {box.name!r}")
        boxes.append(box)
    names = [b.name for b in boxes]
    catch_all = root.text("catch_all")
    if catch_all and catch_all not in names:
        raise r.fail(root.value("catch_all"), "catch_all", f"no mailbox named {catch_all!r}")
    own = frozenset(b.address for b in boxes) | frozenset(
        a.lower() for b in boxes for a in b.aliases
    )
    return EmailConfig(tuple(boxes), catch_all, own)


def parse(data: dict[str, Any], source: str = "email configuration") -> EmailConfig:
    """The configuration from already parsed YAML (a test's or a tool's dict)."""
    return load_text(yaml.safe_dump(data, allow_unicode=True), source)


def load(path: str | None = None) -> EmailConfig:
    """The configuration in `path`, or the embedded default."""
    if path:
        return load_text(Path(path).read_text(encoding="utf-8"), path)
    text = resources.files("switchboard.email_ingest").joinpath("default_config.yaml").read_text()
    return load_text(text, "switchboard/email_ingest/default_config.yaml")
