"""The chat's file configuration: per-tenant allowed origins and opening hours, and the limits.

Read from the YAML file named by CHAT_CONFIG_FILE (what it leaves out takes the defaults of
default_config.yaml), or the embedded default; an error names the file, the line and the field
(switchboard.core.config).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from switchboard.core.config import ConfigError, ConfigReader, compose, is_null

__all__ = ["ChatConfig", "ConfigError", "Hours", "Limits", "TenantConfig", "load", "load_text"]

DEFAULT_FILE = Path(__file__).with_name("default_config.yaml")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?$")
_ANY = re.compile(r".")
UPLOAD_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}
)


@dataclass(frozen=True)
class Hours:
    timezone: str
    days: frozenset[str]
    open: time
    close: time

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(ZoneInfo(self.timezone))
        if DAYS[local.weekday()] not in self.days:
            return False
        return self.open <= local.time() < self.close


@dataclass(frozen=True)
class TenantConfig:
    allowed_origins: frozenset[str] = frozenset()
    hours: Hours | None = None
    # The tenant's IANA time zone: its wallboard's day and hours (default: that of its opening
    # hours, else UTC).
    timezone: str = ""

    @property
    def time_zone(self) -> str:
        return self.timezone or (self.hours.timezone if self.hours else "") or "UTC"


@dataclass(frozen=True)
class Limits:
    # Per visitor (all their sockets, on every replica).
    messages_per_second: float = 1.0
    message_burst: int = 8
    signals_per_second: float = 5.0
    signal_burst: int = 20
    # Per client address (visitors behind one address, or one visitor with many tokens), per
    # tenant (a flood spread over many addresses), per agent (every inbox event).
    address_messages_per_second: float = 4.0
    address_message_burst: int = 32
    tenant_messages_per_second: float = 200.0
    tenant_message_burst: int = 1000
    agent_events_per_second: float = 10.0
    agent_event_burst: int = 60
    # Per client address: new visitor tokens; per visitor and per address: uploads.
    visitor_tokens_per_minute: float = 20.0
    uploads_per_minute: float = 6.0
    upload_max_bytes: int = 5 * 1024 * 1024
    upload_types: frozenset[str] = UPLOAD_TYPES
    visitor_token_ttl_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class ChatConfig:
    limits: Limits = field(default_factory=Limits)
    tenants: dict[str, TenantConfig] = field(default_factory=dict)

    def tenant(self, name: str) -> TenantConfig:
        return self.tenants.get(name) or self.tenants.get("*") or TenantConfig()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_RATES = (
    "messages_per_second",
    "signals_per_second",
    "address_messages_per_second",
    "tenant_messages_per_second",
    "agent_events_per_second",
    "visitor_tokens_per_minute",
    "uploads_per_minute",
)
_BURSTS = (
    "message_burst",
    "signal_burst",
    "address_message_burst",
    "tenant_message_burst",
    "agent_event_burst",
)
_LIMIT_FIELDS = {
    *_RATES,
    *_BURSTS,
    "upload_max_bytes",
    "upload_types",
    "visitor_token_ttl_seconds",
}


def _time(r: ConfigReader, node: yaml.Node, key: str) -> time:
    try:
        return time.fromisoformat(str(r.scalar(node, key)))
    except ValueError:
        raise r.fail(node, key, "must be HH:MM") from None


def _hours(r: ConfigReader, node: yaml.Node, key: str) -> Hours:
    f = {k: v for k, (_, v) in r.mapping(node, key, {"timezone", "days", "open", "close"}).items()}
    tz = r.string(f["timezone"], f"{key}.timezone") if "timezone" in f else "UTC"
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.fail(f["timezone"], f"{key}.timezone", f"unknown time zone {tz!r}") from None
    days: tuple[str, ...] = DAYS
    if "days" in f:
        days = tuple(d.lower()[:3] for d in r.strings(f["days"], f"{key}.days", _ANY))
        if not set(days) <= set(DAYS):
            raise r.fail(f["days"], f"{key}.days", f"must be among {', '.join(DAYS)}")
    return Hours(
        tz,
        frozenset(days),
        _time(r, f["open"], f"{key}.open") if "open" in f else time(0, 0),
        _time(r, f["close"], f"{key}.close") if "close" in f else time(23, 59, 59),
    )


def _tenant(r: ConfigReader, name: str, node: yaml.Node) -> TenantConfig:
    key = f"tenants.{name}"
    if is_null(node):
        return TenantConfig()
    f = {
        k: v for k, (_, v) in r.mapping(node, key, {"allowed_origins", "hours", "timezone"}).items()
    }
    origins: tuple[str, ...] = ()
    if "allowed_origins" in f and not is_null(f["allowed_origins"]):
        path = f"{key}.allowed_origins"
        origins = r.strings(f["allowed_origins"], path, _ANY)
        for i, origin in enumerate(origins):
            if not ORIGIN_RE.match(origin):
                item = r.seq(f["allowed_origins"], path)[i]
                raise r.fail(item, f"{path}[{i}]", f"{origin!r} is not scheme://host[:port]")
    hours = (
        _hours(r, f["hours"], f"{key}.hours") if "hours" in f and not is_null(f["hours"]) else None
    )
    tz = ""
    if "timezone" in f and not is_null(f["timezone"]):
        tz = r.string(f["timezone"], f"{key}.timezone")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise r.fail(f["timezone"], f"{key}.timezone", f"unknown time zone {tz!r}") from None
    return TenantConfig(frozenset(o.lower() for o in origins), hours, tz)


def _limits(r: ConfigReader, node: yaml.Node) -> Limits:
    f = {k: v for k, (_, v) in r.mapping(node, "limits", _LIMIT_FIELDS).items()}
    d = Limits()

    def number(name: str, default: float, lo: float) -> float:
        return r.number(f[name], f"limits.{name}", lo, 1e9) if name in f else default

    def integer(name: str, default: int, lo: int, hi: int) -> int:
        return r.integer(f[name], f"limits.{name}", lo, hi) if name in f else default

    rates: dict[str, Any] = {name: number(name, getattr(d, name), 0.0) for name in _RATES}
    for name, rate in rates.items():
        if rate <= 0:
            raise r.fail(f[name], f"limits.{name}", "must be more than 0")
    bursts: dict[str, Any] = {
        name: integer(name, getattr(d, name), 1, 1_000_000) for name in _BURSTS
    }
    types = d.upload_types
    if "upload_types" in f:
        types = frozenset(
            t.lower() for t in r.strings(f["upload_types"], "limits.upload_types", _ANY)
        )
    return Limits(
        **rates,
        **bursts,
        upload_max_bytes=integer("upload_max_bytes", d.upload_max_bytes, 0, 1 << 30),
        upload_types=types,
        visitor_token_ttl_seconds=integer(
            "visitor_token_ttl_seconds", d.visitor_token_ttl_seconds, 1, 366 * 86400
        ),
    )


def load_text(text: str, source: str = "chat.yaml") -> ChatConfig:
    """Parse and validate a configuration's text (what it leaves out takes the defaults); a
    ConfigError names file, line and field."""
    r = ConfigReader(source)
    root = {
        k: v for k, (_, v) in r.mapping(compose(text, source), "", {"limits", "tenants"}).items()
    }
    limits = (
        _limits(r, root["limits"]) if "limits" in root and not is_null(root["limits"]) else Limits()
    )
    tenants: dict[str, TenantConfig] = {}
    if "tenants" in root and not is_null(root["tenants"]):
        for name, (_, node) in r.mapping(root["tenants"], "tenants", set()).items():
            tenants[name] = _tenant(r, name, node)
    return ChatConfig(limits, tenants)


def parse(raw: dict[str, Any], source: str = "chat configuration") -> ChatConfig:
    """The configuration from already parsed YAML (a test's or a tool's dict)."""
    return load_text(yaml.safe_dump(raw, allow_unicode=True), source)


def load(path: str | Path | None = None) -> ChatConfig:
    """The YAML file at `path` (what it leaves out takes the defaults), or the embedded default."""
    if not path:
        return load_text(
            DEFAULT_FILE.read_text(encoding="utf-8"), "switchboard/chat/default_config.yaml"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), 1, "(file)", f"cannot be read: {exc.strerror}") from None
    return load_text(text, str(path))
