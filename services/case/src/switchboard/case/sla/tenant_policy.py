"""One tenant's part of the policy file, as the admin console edits it at run time.

A tenant's part is a policy file (the same format, docs/case.md) holding only what is that
tenant's: its business-hours calendar(s) (time zone, hours, holidays) and `business_hours` entry,
its SLA policies with their escalation rules, templates (and so its portal catalogue), recurring
tasks, closure rules and `auto_close_after`. Every entry names the tenant. The running policies
are the file's with each stored part in place of that tenant's entries: the part's entries come
first (so they are matched before the file's "*" entries), then the file's other entries.

A part is checked by `policy.parse` on the whole merged document, exactly as at start; the error
names the part's entry and line (``ApplyTenantPolicy:7: calendars.office.holidays[1]: ...``).
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from switchboard.case.sla import policy
from switchboard.core.config import ConfigError, compose, locate

LISTS = ("sla_policies", "templates", "recurring", "closure")  # entries naming their tenant
MAPS = ("business_hours", "auto_close_after")  # tenant -> value
KEYS = ("calendars", *MAPS, *LISTS)
SOURCE = "ApplyTenantPolicy"


def _calendars_of(doc: Mapping[str, Any], tenant: str) -> set[str]:
    """The calendars `tenant`'s own entries use."""
    used = {
        str(p.get("calendar", "24x7"))
        for p in doc.get("sla_policies") or []
        if isinstance(p, Mapping) and str(p.get("tenant", "*")) == tenant
    }
    hours = doc.get("business_hours") or {}
    if isinstance(hours, Mapping) and tenant in hours:
        used.add(str(hours[tenant]))
    return used


def _others(doc: Mapping[str, Any], tenant: str) -> set[str]:
    """The calendars any other tenant's (or every tenant's "*") entries use."""
    used: set[str] = set()
    for p in doc.get("sla_policies") or []:
        if isinstance(p, Mapping) and str(p.get("tenant", "*")) != tenant:
            used.add(str(p.get("calendar", "24x7")))
    hours = doc.get("business_hours") or {}
    if isinstance(hours, Mapping):
        used |= {str(v) for k, v in hours.items() if str(k) != tenant}
    return used


def section(doc: Mapping[str, Any], tenant: str) -> dict[str, Any]:
    """`tenant`'s part of a policy document (calendars shared with other tenants stay out: they
    are not the tenant's to change)."""
    out: dict[str, Any] = {}
    shared = _others(doc, tenant) | {"24x7"}
    calendars = doc.get("calendars") or {}
    own = {
        name: calendars[name]
        for name in calendars
        if name in _calendars_of(doc, tenant) and name not in shared
    }
    if own:
        out["calendars"] = own
    for key in MAPS:
        value = doc.get(key) or {}
        if tenant in value:
            out[key] = {tenant: value[tenant]}
    for key in LISTS:
        entries = [e for e in doc.get(key) or [] if str(e.get("tenant", "*")) == tenant]
        if entries:
            out[key] = entries
    return out


def dump(part: Mapping[str, Any]) -> str:
    """A part as its YAML; `load` of it gives the same part, and `dump` of that the same text."""
    if not part:
        return "{}\n"
    return yaml.safe_dump(dict(part), allow_unicode=True, sort_keys=False, width=100)


def merge(base: Mapping[str, Any], tenant: str, part: Mapping[str, Any]) -> dict[str, Any]:
    """The base document with `tenant`'s entries replaced by `part`'s."""
    out: dict[str, Any] = dict(base)
    out["calendars"] = {**(base.get("calendars") or {}), **(part.get("calendars") or {})}
    for key in MAPS:
        kept = {k: v for k, v in (base.get(key) or {}).items() if str(k) != tenant}
        out[key] = {**(part.get(key) or {}), **kept}
    for key in LISTS:
        others = [e for e in base.get(key) or [] if str(e.get("tenant", "*")) != tenant]
        out[key] = [*(part.get(key) or []), *others]
    return out


def _fail(root: yaml.Node | None, path: str, problem: str) -> policy.PolicyError:
    line = locate(root, path).start_mark.line + 1 if root is not None else 1
    return policy.PolicyError(path, problem, SOURCE, line)


def load(base: Mapping[str, Any], tenant: str, text: str) -> tuple[dict[str, Any], policy.Policies]:
    """`tenant`'s part read from `text`, and the policies it makes with `base` (the other
    tenants' parts already merged in); PolicyError names the part's line and entry."""
    try:
        root = compose(text, SOURCE)
    except ConfigError as exc:
        raise policy.PolicyError(exc.path, exc.problem, SOURCE, exc.line) from None
    part = yaml.safe_load(text) or {}
    if not isinstance(part, Mapping):
        raise _fail(root, "(document)", "must be a mapping")
    for key in part:
        if key not in KEYS:
            raise _fail(root, str(key), f"unknown entry (expected one of {', '.join(KEYS)})")
    for key in ("calendars", *MAPS):
        if not isinstance(part.get(key) or {}, Mapping):
            raise _fail(root, key, "must be a mapping")
    for key in MAPS:
        for name in part.get(key) or {}:
            if str(name) != tenant:
                raise _fail(root, f"{key}.{name}", f"only {tenant}'s entry may be here")
    for key in LISTS:
        entries = part.get(key) or []
        if not isinstance(entries, list):
            raise _fail(root, key, "must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise _fail(root, f"{key}[{i}]", "must be a mapping")
            if str(entry.get("tenant", "")) != tenant:
                raise _fail(root, f"{key}[{i}].tenant", f"must be {tenant}")
    shared = _others(base, tenant) | {"24x7"}
    for name in part.get("calendars") or {}:
        if str(name) in shared:
            raise _fail(root, f"calendars.{name}", "is another tenant's calendar: use another name")
    merged = merge(base, tenant, part)
    try:
        return dict(part), policy.parse(merged)
    except policy.PolicyError as exc:
        raise _fail(root, exc.path, exc.problem) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(root, "(document)", f"missing or malformed entry: {exc}") from None
