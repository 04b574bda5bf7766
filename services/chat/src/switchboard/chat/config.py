"""The chat's file configuration: per-tenant allowed origins and opening hours, and the limits.

Read from the YAML file named by CHAT_CONFIG_FILE, over the embedded default_config.yaml.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

DEFAULT_FILE = Path(__file__).with_name("default_config.yaml")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(?::\d{1,5})?$")


class ConfigError(ValueError):
    """The configuration file is malformed; the message names the key."""


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


@dataclass(frozen=True)
class Limits:
    messages_per_second: float = 1.0
    message_burst: int = 8
    signals_per_second: float = 5.0
    signal_burst: int = 20
    upload_max_bytes: int = 5 * 1024 * 1024
    upload_types: frozenset[str] = frozenset()
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


def _time(value: Any, key: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: must be HH:MM") from None


def _hours(raw: Any, key: str) -> Hours | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    tz = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{key}.timezone: unknown time zone {tz!r}") from None
    days = frozenset(str(d).lower()[:3] for d in raw.get("days", DAYS))
    if not days <= set(DAYS):
        raise ConfigError(f"{key}.days: must be among {', '.join(DAYS)}")
    return Hours(
        tz,
        days,
        _time(raw.get("open", "00:00"), f"{key}.open"),
        _time(raw.get("close", "23:59:59"), f"{key}.close"),
    )


def _tenant(name: str, raw: Any) -> TenantConfig:
    key = f"tenants.{name}"
    if raw is None:
        return TenantConfig()
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    origins = raw.get("allowed_origins") or []
    if not isinstance(origins, list):
        raise ConfigError(f"{key}.allowed_origins: must be a list")
    for origin in origins:
        if not isinstance(origin, str) or not ORIGIN_RE.match(origin):
            raise ConfigError(f"{key}.allowed_origins: {origin!r} is not scheme://host[:port]")
    return TenantConfig(
        frozenset(o.lower() for o in origins), _hours(raw.get("hours"), f"{key}.hours")
    )


def parse(raw: dict[str, Any]) -> ChatConfig:
    limits_raw = raw.get("limits") or {}
    if not isinstance(limits_raw, dict):
        raise ConfigError("limits: must be a mapping")
    try:
        limits = Limits(
            messages_per_second=float(limits_raw["messages_per_second"]),
            message_burst=int(limits_raw["message_burst"]),
            signals_per_second=float(limits_raw["signals_per_second"]),
            signal_burst=int(limits_raw["signal_burst"]),
            upload_max_bytes=int(limits_raw["upload_max_bytes"]),
            upload_types=frozenset(str(t).lower() for t in limits_raw["upload_types"]),
            visitor_token_ttl_seconds=int(limits_raw["visitor_token_ttl_seconds"]),
        )
    except KeyError as exc:
        raise ConfigError(f"limits.{exc.args[0]}: is required") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"limits: {exc}") from None
    if limits.message_burst < 1 or limits.signal_burst < 1 or limits.messages_per_second <= 0:
        raise ConfigError("limits: bursts must be ≥ 1 and rates > 0")
    tenants_raw = raw.get("tenants") or {}
    if not isinstance(tenants_raw, dict):
        raise ConfigError("tenants: must be a mapping")
    return ChatConfig(limits, {str(k): _tenant(str(k), v) for k, v in tenants_raw.items()})


def load(path: str | Path | None = None) -> ChatConfig:
    """The embedded default, overlaid with the YAML file at `path` when given."""
    raw = yaml.safe_load(DEFAULT_FILE.read_text(encoding="utf-8"))
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"CHAT_CONFIG_FILE: cannot read {path}: {exc.strerror}") from None
        try:
            over = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"CHAT_CONFIG_FILE: not YAML: {exc}") from None
        if not isinstance(over, dict):
            raise ConfigError("CHAT_CONFIG_FILE: must be a mapping")
        raw = _merge(raw, over)
    return parse(raw)
