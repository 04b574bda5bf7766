"""The case service's policy file (CASE_POLICY_FILE, YAML): SLA policies per tenant, queue and
priority, business-hours calendars, escalation rules, case templates and recurring tasks.

Without a file, the embedded default_policy.yaml serves the demo tenant. The format is documented
in docs/case.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from switchboard.case import catalogue
from switchboard.case.sla.calendar import ALWAYS, Calendar, parse_calendar
from switchboard.core.config import ConfigError, compose, locate, parse_duration
from switchboard.v1 import case_pb2

METRICS = ("first_response", "next_response", "resolution")
FUNCTIONAL = ("first_line", "second_line", "experts", "vendor")
HIERARCHICAL = ("shift_lead", "manager", "director")
ACTIONS = frozenset({"email", "event", "reprioritise", "reassign"})
DEFAULT_AUTO_CLOSE = timedelta(days=7)

PRIORITIES = {
    "low": case_pb2.CASE_PRIORITY_LOW,
    "normal": case_pb2.CASE_PRIORITY_NORMAL,
    "high": case_pb2.CASE_PRIORITY_HIGH,
    "urgent": case_pb2.CASE_PRIORITY_URGENT,
}
CASE_TYPES = {
    "inquiry": case_pb2.CASE_TYPE_INQUIRY,
    "registration": case_pb2.CASE_TYPE_REGISTRATION,
    "change": case_pb2.CASE_TYPE_CHANGE,
    "complaint": case_pb2.CASE_TYPE_COMPLAINT,
    "incident": case_pb2.CASE_TYPE_INCIDENT,
    "service_request": case_pb2.CASE_TYPE_SERVICE_REQUEST,
}


class PolicyError(ConfigError):
    """The policy file is not valid: the entry (``sla_policies[0].escalation[1]``) and, once
    `load` has placed it, the file and line."""

    def __init__(self, path: str, problem: str, source: str = "", line: int = 0) -> None:
        super().__init__(source, line, path, problem)


def duration(value: Any, where: str) -> timedelta:
    """30s, 15m, 4h, 2d, 1w, or a number of seconds (switchboard.core.config)."""
    seconds = parse_duration(value)
    if seconds is None:
        raise PolicyError(where, f"{value!r} is not a duration (e.g. 30m, 4h, 2d)")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class EscalationRule:
    at: int  # percent of the target
    kind: str  # functional, hierarchical
    level: str
    actions: tuple[str, ...]
    notify: tuple[str, ...] = ()  # email addresses
    priority: int = 0  # reprioritise to this
    reassign_to: str = ""  # reassign to this agent (or group) id
    queue: str = ""  # ... and/or this queue
    repeat_every: timedelta | None = None
    metrics: tuple[str, ...] = METRICS


@dataclass(frozen=True)
class SlaPolicy:
    name: str
    tenant: str  # or *
    queues: tuple[str, ...]  # empty: any
    priorities: frozenset[int]  # empty: any
    calendar: Calendar
    targets: Mapping[str, timedelta]
    escalations: tuple[EscalationRule, ...]

    def matches(self, tenant: str, queue: str, priority: int) -> bool:
        return (
            self.tenant in ("*", tenant)
            and (not self.queues or queue in self.queues or "*" in self.queues)
            and (not self.priorities or priority in self.priorities)
        )


@dataclass(frozen=True)
class Template:
    name: str
    tenant: str
    subject: str = ""
    case_type: int = case_pb2.CASE_TYPE_INQUIRY
    priority: int = case_pb2.CASE_PRIORITY_NORMAL
    queue: str = ""
    note: str = ""
    skills: tuple[str, ...] = ()  # what a case opened from the portal's catalogue is routed by
    catalogue: catalogue.Form | None = None  # offered in the portal's service catalogue

    @property
    def contact_priority(self) -> int:
        """The priority as a contact's (0 normal, 1 high, 2 urgent), which the router reads."""
        if self.priority == case_pb2.CASE_PRIORITY_URGENT:
            return 2
        return 1 if self.priority == case_pb2.CASE_PRIORITY_HIGH else 0


@dataclass(frozen=True)
class RecurringTask:
    """Opens a case from `template` daily, weekly (on `day` 0=Mon..6) or monthly (on `day`
    1..28, or -1 for the last day) at `at` local time, from `start` on."""

    name: str
    tenant: str
    template: str
    every: str
    at: time
    tz: ZoneInfo
    day: int = 1
    start: date = date(2000, 1, 1)

    def _on(self, d: date) -> bool:
        if self.every == "daily":
            return True
        if self.every == "weekly":
            return d.weekday() == self.day
        if self.day == -1:
            return (d + timedelta(days=1)).month != d.month
        return d.day == self.day

    def occurrences(self, after: datetime, until: datetime) -> list[datetime]:
        """Every occurrence in (after, until], oldest first."""
        found = []
        d = max(after.astimezone(self.tz).date(), self.start)
        last = until.astimezone(self.tz).date()
        while d <= last:
            if self._on(d):
                when = datetime.combine(d, self.at, self.tz)
                if after < when <= until:
                    found.append(when)
            d += timedelta(days=1)
        return found


REVIEW, CONFIRMATION = "review", "confirmation"


@dataclass(frozen=True)
class ClosureRule:
    """What a resolved case of `tenant` ("*": any) and of one of `case_types` (empty: any) waits
    for before it closes: a reviewer's sign-off, or the customer's confirmation (closed by the
    scheduler after `confirm_within` without an answer; None: the tenant's auto_close_after)."""

    tenant: str
    case_types: frozenset[int]
    require: str  # review, confirmation
    confirm_within: timedelta | None = None

    def matches(self, tenant: str, case_type: int) -> bool:
        return self.tenant in ("*", tenant) and (
            not self.case_types or case_type in self.case_types
        )


@dataclass(frozen=True)
class Policies:
    sla: tuple[SlaPolicy, ...] = ()
    templates: Mapping[tuple[str, str], Template] = field(default_factory=dict)
    tasks: tuple[RecurringTask, ...] = ()
    auto_close_after: Mapping[str, timedelta] = field(default_factory=dict)  # tenant or *
    default_phone_region: str = ""
    # Each tenant's business hours (tenant or *): the email service level in reports counts
    # only this time when asked to (`email_business_hours`).
    business_hours: Mapping[str, Calendar] = field(default_factory=dict)
    closure: tuple[ClosureRule, ...] = ()

    def become(self, other: Policies) -> None:
        """Take `other`'s policies in place: everything holding this object (the SLA engine,
        records, portal, reports) follows a run-time change. One synchronous step, so no
        coroutine sees a mix of the two."""
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, getattr(other, name))

    def policy_for(self, tenant: str, queue: str, priority: int) -> SlaPolicy | None:
        """The first policy in file order that matches the case."""
        for p in self.sla:
            if p.matches(tenant, queue, priority):
                return p
        return None

    def by_name(self, name: str) -> SlaPolicy | None:
        return next((p for p in self.sla if p.name == name), None)

    def template(self, tenant: str, name: str) -> Template | None:
        return self.templates.get((tenant, name)) or self.templates.get(("*", name))

    def catalogue(self, tenant: str) -> list[Template]:
        """The templates the tenant offers in the portal's catalogue (its own, and those of
        every tenant it has none of the same name of), in file order."""
        return [
            t
            for (owner, name), t in self.templates.items()
            if t.catalogue is not None
            and (owner == tenant or (owner == "*" and (tenant, name) not in self.templates))
        ]

    def business_calendar(self, tenant: str) -> Calendar | None:
        """The tenant's business-hours calendar (its own, else the "*" one), if it has one."""
        return self.business_hours.get(tenant) or self.business_hours.get("*")

    def time_zone(self, tenant: str) -> ZoneInfo:
        """The tenant's time zone: its business hours' (UTC when it has none). Reports' days
        such as the QA scorecard's are the tenant's days."""
        calendar = self.business_calendar(tenant)
        return calendar.tz if calendar is not None else ZoneInfo("UTC")

    def auto_close(self, tenant: str) -> timedelta:
        return self.auto_close_after.get(tenant, self.auto_close_after.get("*", DEFAULT_AUTO_CLOSE))

    def closure_for(self, tenant: str, case_type: int) -> ClosureRule | None:
        """The first closure rule in file order that matches the case; None: resolved is enough."""
        return next((r for r in self.closure if r.matches(tenant, case_type)), None)

    def confirm_within(self, tenant: str, case_type: int) -> timedelta:
        """How long a case waits for its customer's confirmation before it closes by itself."""
        rule = self.closure_for(tenant, case_type)
        if rule is not None and rule.confirm_within is not None:
            return rule.confirm_within
        return self.auto_close(tenant)


def _enum(table: Mapping[str, int], value: Any, where: str) -> int:
    try:
        return table[str(value).lower()]
    except KeyError:
        raise PolicyError(where, f"{value!r} is not one of {', '.join(table)}") from None


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _rule(spec: Mapping[str, Any], where: str) -> EscalationRule:
    kind = str(spec.get("kind", "functional"))
    chain = {"functional": FUNCTIONAL, "hierarchical": HIERARCHICAL}.get(kind)
    if chain is None:
        raise PolicyError(where, "kind must be functional or hierarchical")
    level = str(spec.get("level", ""))
    if level not in chain:
        raise PolicyError(where, f"a {kind} level is one of {', '.join(chain)}")
    actions = tuple(str(a) for a in _list(spec.get("actions", ["event"])))
    unknown = set(actions) - ACTIONS
    if unknown:
        raise PolicyError(where, f"unknown actions {sorted(unknown)}")
    at = int(spec.get("at", 100))
    if not 1 <= at <= 1000:
        raise PolicyError(where, "at is a percentage of the target (1..1000)")
    metrics = tuple(str(m) for m in _list(spec.get("metrics"))) or METRICS
    if set(metrics) - set(METRICS):
        raise PolicyError(where, f"metrics are {', '.join(METRICS)}")
    repeat = spec.get("repeat_every")
    return EscalationRule(
        at=at,
        kind=kind,
        level=level,
        actions=actions,
        notify=tuple(str(a) for a in _list(spec.get("notify"))),
        priority=_enum(PRIORITIES, spec["priority"], where) if spec.get("priority") else 0,
        reassign_to=str(spec.get("reassign_to", "")),
        queue=str(spec.get("queue", "")),
        repeat_every=duration(repeat, where) if repeat else None,
        metrics=metrics,
    )


def _form(spec: Any, where: str) -> catalogue.Form | None:
    try:
        return catalogue.parse(spec, where)
    except catalogue.CatalogueError as exc:
        raise PolicyError(exc.path, exc.problem) from None


def parse(doc: Mapping[str, Any]) -> Policies:
    """Policies from a parsed policy file; PolicyError names the first invalid entry."""
    if not isinstance(doc, Mapping):
        raise PolicyError("(document)", "must be a mapping")
    calendars: dict[str, Calendar] = {"24x7": ALWAYS}
    for name, spec in (doc.get("calendars") or {}).items():
        try:
            calendars[str(name)] = parse_calendar(str(name), spec)
        except (ValueError, KeyError) as exc:
            raise PolicyError(f"calendars.{name}", str(exc)) from None
    sla = []
    for i, spec in enumerate(doc.get("sla_policies") or []):
        where = f"sla_policies[{i}]"
        cal_name = str(spec.get("calendar", "24x7"))
        if cal_name not in calendars:
            raise PolicyError(where, f"unknown calendar {cal_name!r}")
        targets = {m: duration(spec[m], f"{where}.{m}") for m in METRICS if spec.get(m)}
        sla.append(
            SlaPolicy(
                name=str(spec.get("name", f"policy-{i}")),
                tenant=str(spec.get("tenant", "*")),
                queues=tuple(str(q) for q in _list(spec.get("queue"))),
                priorities=frozenset(
                    _enum(PRIORITIES, p, where) for p in _list(spec.get("priority"))
                ),
                calendar=calendars[cal_name],
                targets=targets,
                escalations=tuple(
                    sorted(
                        (
                            _rule(r, f"{where}.escalation[{j}]")
                            for j, r in enumerate(spec.get("escalation") or [])
                        ),
                        key=lambda r: r.at,
                    )
                ),
            )
        )
    templates: dict[tuple[str, str], Template] = {}
    for i, spec in enumerate(doc.get("templates") or []):
        where = f"templates[{i}]"
        t = Template(
            name=str(spec["name"]),
            tenant=str(spec.get("tenant", "*")),
            subject=str(spec.get("subject", "")),
            case_type=_enum(CASE_TYPES, spec.get("case_type", "inquiry"), where),
            priority=_enum(PRIORITIES, spec.get("priority", "normal"), where),
            queue=str(spec.get("queue", "")),
            note=str(spec.get("note", "")),
            skills=tuple(str(k) for k in _list(spec.get("skills"))),
            catalogue=_form(spec.get("catalogue"), f"{where}.catalogue"),
        )
        templates[(t.tenant, t.name)] = t
    tasks = []
    for i, spec in enumerate(doc.get("recurring") or []):
        where = f"recurring[{i}]"
        every = str(spec.get("every", "monthly"))
        if every not in ("daily", "weekly", "monthly"):
            raise PolicyError(where, "every is daily, weekly or monthly")
        tenant = str(spec.get("tenant", ""))
        template = str(spec.get("template", ""))
        if not tenant or tenant == "*":
            raise PolicyError(where, "a recurring task names its tenant")
        if (tenant, template) not in templates and ("*", template) not in templates:
            raise PolicyError(where, f"unknown template {template!r}")
        start = spec.get("start")
        try:
            at = time.fromisoformat(str(spec.get("at", "09:00")))
        except ValueError:
            raise PolicyError(f"{where}.at", "must be a time of day (09:00)") from None
        try:
            tz = ZoneInfo(str(spec.get("timezone", "UTC")))
        except (ValueError, ZoneInfoNotFoundError):
            raise PolicyError(f"{where}.timezone", "unknown time zone") from None
        try:
            day = int(spec.get("day", 1))
        except (TypeError, ValueError):
            raise PolicyError(f"{where}.day", "must be a number") from None
        tasks.append(
            RecurringTask(
                name=str(spec["name"]),
                tenant=tenant,
                template=template,
                every=every,
                at=at,
                tz=tz,
                day=day,
                start=start
                if isinstance(start, date)
                else date.fromisoformat(str(start))
                if start
                else date(2000, 1, 1),
            )
        )
    auto_close = {
        str(t): duration(v, f"auto_close_after.{t}")
        for t, v in (doc.get("auto_close_after") or {}).items()
    }
    business_hours: dict[str, Calendar] = {}
    raw_hours = doc.get("business_hours") or {}
    if not isinstance(raw_hours, Mapping):
        raise PolicyError("business_hours", "must map tenants to calendar names")
    for tenant, cal_name in raw_hours.items():
        if str(cal_name) not in calendars:
            raise PolicyError(f"business_hours.{tenant}", f"unknown calendar {cal_name!r}")
        business_hours[str(tenant)] = calendars[str(cal_name)]
    closure = []
    for i, spec in enumerate(doc.get("closure") or []):
        where = f"closure[{i}]"
        if not isinstance(spec, Mapping):
            raise PolicyError(where, "must be a mapping")
        require = str(spec.get("require", ""))
        if require not in (REVIEW, CONFIRMATION):
            raise PolicyError(
                f"{where}.require", f"{require!r} is not one of {REVIEW}, {CONFIRMATION}"
            )
        within = spec.get("confirm_within")
        closure.append(
            ClosureRule(
                tenant=str(spec.get("tenant", "*")),
                case_types=frozenset(
                    _enum(CASE_TYPES, t, f"{where}.case_types[{j}]")
                    for j, t in enumerate(_list(spec.get("case_types")))
                ),
                require=require,
                confirm_within=duration(within, f"{where}.confirm_within") if within else None,
            )
        )
    return Policies(
        closure=tuple(closure),
        sla=tuple(sla),
        templates=templates,
        tasks=tuple(tasks),
        auto_close_after=auto_close,
        default_phone_region=str(doc.get("default_phone_region", "")),
        business_hours=business_hours,
    )


def read(path: str | Path | None) -> tuple[str, str]:
    """The policy file's name and text: `path`'s, or the embedded default's when it is empty."""
    if path:
        return str(path), Path(path).read_text(encoding="utf-8")
    source = "switchboard/case/sla/default_policy.yaml"
    return source, resources.files("switchboard.case.sla").joinpath(
        "default_policy.yaml"
    ).read_text()


def load(path: str | Path | None) -> Policies:
    """The policies in `path`, or the embedded default when it is empty; an error names the
    file, the line and the entry."""
    source, text = read(path)
    root = compose(text, source)
    doc = yaml.safe_load(text) or {}
    try:
        return parse(doc)
    except PolicyError as exc:
        line = locate(root, exc.path).start_mark.line + 1
        raise PolicyError(exc.path, exc.problem, source, line) from None
    except (KeyError, TypeError) as exc:
        raise PolicyError("(document)", f"missing or malformed entry: {exc}", source, 1) from None
