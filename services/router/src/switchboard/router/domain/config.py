"""The router's declarative configuration: tenants, queues, skills, languages, service-level
targets, routing steps, surge levels.

It is YAML, validated at load. Every error names the file, the line and the field, e.g.
``router.yaml:14: tenants.demo.queues[1].name: duplicate queue 'billing'``. The same schema is
used for a whole file (``tenants: {name: {...}}``) and for one tenant's section given to the admin
API (``ApplyConfig``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.config import ConfigError, ConfigReader, compose
from switchboard.v1 import contact_pb2

CHANNELS: dict[str, int] = {
    "voice": contact_pb2.CHANNEL_VOICE,
    "email": contact_pb2.CHANNEL_EMAIL,
    "fax": contact_pb2.CHANNEL_FAX,
    "chat": contact_pb2.CHANNEL_CHAT,
}
# refuse_breaks: new breaks get FAILED_PRECONDITION; notify_agents: the change goes down the
# agent sessions of the agents on break and of team leads and supervisors; pause_callbacks:
# non-urgent outbound callbacks wait; notify_supervisors: SurgeLevelChanged on the bus (always
# published; the action is kept for the configurations that name it).
SURGE_ACTIONS = frozenset(
    {"refuse_breaks", "notify_agents", "pause_callbacks", "notify_supervisors"}
)
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class Step:
    """After `after` seconds in the queue, relax the requirements (or overflow)."""

    name: str
    after: float
    min_proficiency: int | None = None  # accept agents at this level or above
    add_languages: tuple[str, ...] = ()  # also accept agents speaking these
    drop_skills: bool = False  # any agent of the language will do
    overflow_to: str = ""  # move to this queue (its own steps then apply)
    priority: int | None = None  # raise the contact's priority to this

    def describe(self) -> str:
        parts = []
        if self.min_proficiency is not None:
            parts.append(f"min proficiency {self.min_proficiency}")
        if self.add_languages:
            parts.append("also " + ", ".join(self.add_languages))
        if self.drop_skills:
            parts.append("skills dropped")
        if self.overflow_to:
            parts.append(f"overflow to {self.overflow_to}")
        if self.priority is not None:
            parts.append(f"priority {self.priority}")
        return "; ".join(parts) or "no change"


@dataclass(frozen=True)
class QueueConfig:
    name: str
    skills: tuple[str, ...] = ()  # skills every contact of the queue needs, besides its own
    min_proficiency: int = 1
    sl_threshold: float = 20.0  # answered within this many seconds counts toward the SL
    sl_target: float = 0.8
    sl_window: float = 3600.0  # rolling window of the live statistics
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True)
class SurgeLevel:
    """One level of a tenant's surge plan: raised when more than `queued_over` customers have
    stayed queued in one queue (waiting or offered, not yet answered) continuously for
    `raise_for`; cleared when `idle_agents` agents have each been idle continuously for
    `idle_for` (and no queue still meets the raise condition)."""

    level: int
    queued_over: int
    raise_for: float
    idle_agents: int
    idle_for: float
    actions: frozenset[str] = frozenset()
    queues: tuple[str, ...] = ()  # the queues it watches; () = every queue of the tenant

    def watches(self, queue: str) -> bool:
        return not self.queues or queue in self.queues

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load a level pickled under its earlier field names."""
        renamed = {
            "waiting_over": "queued_over",
            "wait_longer_than": "raise_for",
            "clear_idle_agents": "idle_agents",
            "clear_idle_for": "idle_for",
        }
        for name, value in state.items():
            object.__setattr__(self, renamed.get(name, name), value)


@dataclass(frozen=True)
class TenantConfig:
    tenant: str
    languages: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    queues: dict[str, QueueConfig] = field(default_factory=dict)
    default_queue: str = "general"
    capacity: dict[int, int] = field(default_factory=dict)
    accept_timeout: dict[int, float] = field(default_factory=dict)
    autopause_after: int = 3  # consecutive missed offers -> not responding (0 = never)
    wrap_up_after: float = 0.0  # after-contact work: agent in wrap-up this long, then available
    sticky_ttl: float = 1800.0  # route to the customer's last agent for this long
    break_reasons: tuple[str, ...] = ()
    surge: tuple[SurgeLevel, ...] = ()
    urgent_priority: int = 5  # contacts at or above are never paused
    yaml_text: str = ""

    def queue(self, name: str) -> QueueConfig:
        return self.queues.get(name) or self.queues[self.default_queue]

    def timeout_for(self, channel: int) -> float:
        return self.accept_timeout.get(channel, 20.0)


DEFAULT_CAPACITY: dict[int, int] = {
    contact_pb2.CHANNEL_VOICE: 1,
    contact_pb2.CHANNEL_CHAT: 3,
    contact_pb2.CHANNEL_EMAIL: 5,
    contact_pb2.CHANNEL_FAX: 5,
}
DEFAULT_ACCEPT_TIMEOUT: dict[int, float] = {
    contact_pb2.CHANNEL_VOICE: 20.0,
    contact_pb2.CHANNEL_CHAT: 30.0,
    contact_pb2.CHANNEL_EMAIL: 120.0,
    contact_pb2.CHANNEL_FAX: 120.0,
}


def fallback_tenant(tenant: str) -> TenantConfig:
    """A tenant with no configuration: one queue, defaults everywhere, no skill vocabulary."""
    return TenantConfig(
        tenant=tenant,
        queues={"general": QueueConfig("general")},
        capacity=dict(DEFAULT_CAPACITY),
        accept_timeout=dict(DEFAULT_ACCEPT_TIMEOUT),
    )


@dataclass(frozen=True)
class RouterConfig:
    tenants: dict[str, TenantConfig]
    defaults: TenantConfig | None = None  # for tenants the file does not name

    def tenant(self, name: str) -> TenantConfig:
        cfg = self.tenants.get(name)
        if cfg is not None:
            return cfg
        if self.defaults is not None:
            return _renamed(self.defaults, name)
        return fallback_tenant(name)


def _renamed(cfg: TenantConfig, name: str) -> TenantConfig:
    from dataclasses import replace

    return replace(cfg, tenant=name)


# ---- loading -----------------------------------------------------------------------------------


_TENANT_FIELDS = {
    "languages",
    "skills",
    "queues",
    "default_queue",
    "capacity",
    "accept_timeout",
    "autopause_after",
    "wrap_up_after",
    "sticky_ttl",
    "break_reasons",
    "surge",
    "urgent_priority",
}
_QUEUE_FIELDS = {"name", "skills", "min_proficiency", "service_level", "steps"}
_STEP_FIELDS = {
    "name",
    "after",
    "min_proficiency",
    "add_languages",
    "drop_skills",
    "overflow_to",
    "priority",
}
_SURGE_FIELDS = {"level", "raise", "clear", "actions"}


def _tenant(w: ConfigReader, name: str, node: yaml.Node, path: str, text: str) -> TenantConfig:
    f = w.mapping(node, path, _TENANT_FIELDS)
    languages = (
        w.strings(f["languages"][1], f"{path}.languages", _LANGUAGE) if "languages" in f else ()
    )
    skills = w.strings(f["skills"][1], f"{path}.skills", _NAME) if "skills" in f else ()

    def channel_map(key: str, parse: Any) -> dict[int, Any]:
        out: dict[int, Any] = {}
        if key not in f:
            return out
        for ch, (knode, vnode) in w.mapping(f[key][1], f"{path}.{key}", set(CHANNELS)).items():
            out[CHANNELS[ch]] = parse(vnode, f"{path}.{key}.{ch}")
            del knode
        return out

    capacity = {**DEFAULT_CAPACITY, **channel_map("capacity", lambda n, p: w.integer(n, p, 0, 100))}
    timeouts = {**DEFAULT_ACCEPT_TIMEOUT, **channel_map("accept_timeout", w.duration)}
    if capacity[contact_pb2.CHANNEL_VOICE] > 1:
        raise w.fail(f["capacity"][1], f"{path}.capacity.voice", "voice is exclusive: at most 1")

    queues: dict[str, QueueConfig] = {}
    queue_nodes: list[tuple[yaml.Node, str, dict[str, tuple[yaml.Node, yaml.Node]]]] = []
    if "queues" in f:
        for i, qnode in enumerate(w.seq(f["queues"][1], f"{path}.queues")):
            qpath = f"{path}.queues[{i}]"
            qf = w.mapping(qnode, qpath, _QUEUE_FIELDS)
            if "name" not in qf:
                raise w.fail(qnode, f"{qpath}.name", "is required")
            qname = w.string(qf["name"][1], f"{qpath}.name", _NAME)
            if qname in queues:
                raise w.fail(qf["name"][1], f"{qpath}.name", f"duplicate queue {qname!r}")
            queues[qname] = QueueConfig(qname)
            queue_nodes.append((qnode, qpath, qf))
    else:
        queues["general"] = QueueConfig("general")

    def check_skill(node: yaml.Node, p: str, skill: str) -> None:
        if skills and skill not in skills:
            raise w.fail(node, p, f"unknown skill {skill!r} (the tenant's skills: {list(skills)})")

    def check_language(node: yaml.Node, p: str, lang: str) -> None:
        base = {t.split("-")[0].lower() for t in languages}
        if languages and lang.split("-")[0].lower() not in base:
            raise w.fail(node, p, f"unknown language {lang!r} (the tenant's: {list(languages)})")

    for _qnode, qpath, qf in queue_nodes:
        qname = w.string(qf["name"][1], f"{qpath}.name", _NAME)
        qskills: tuple[str, ...] = ()
        if "skills" in qf:
            qskills = w.strings(qf["skills"][1], f"{qpath}.skills", _NAME)
            for j, s in enumerate(qskills):
                check_skill(w.seq(qf["skills"][1], "")[j], f"{qpath}.skills[{j}]", s)
        min_prof = (
            w.integer(qf["min_proficiency"][1], f"{qpath}.min_proficiency", 1, 5)
            if "min_proficiency" in qf
            else 1
        )
        threshold, target, window = 20.0, 0.8, 3600.0
        if "service_level" in qf:
            sp = f"{qpath}.service_level"
            sf = w.mapping(qf["service_level"][1], sp, {"threshold", "target", "window"})
            if "threshold" in sf:
                threshold = w.duration(sf["threshold"][1], f"{sp}.threshold")
            if "target" in sf:
                target = w.number(sf["target"][1], f"{sp}.target", 0.0, 1.0)
            if "window" in sf:
                window = w.duration(sf["window"][1], f"{sp}.window")
                if window <= 0:
                    raise w.fail(sf["window"][1], f"{sp}.window", "must be positive")
        steps: list[Step] = []
        if "steps" in qf:
            last_after = -1.0
            for j, snode in enumerate(w.seq(qf["steps"][1], f"{qpath}.steps")):
                sp = f"{qpath}.steps[{j}]"
                sf = w.mapping(snode, sp, _STEP_FIELDS)
                if "after" not in sf:
                    raise w.fail(snode, f"{sp}.after", "is required")
                after = w.duration(sf["after"][1], f"{sp}.after")
                if after <= last_after:
                    raise w.fail(
                        sf["after"][1], f"{sp}.after", "steps must come in increasing time"
                    )
                last_after = after
                sname = (
                    w.string(sf["name"][1], f"{sp}.name", _NAME)
                    if "name" in sf
                    else f"step-{j + 1}"
                )
                step_min = (
                    w.integer(sf["min_proficiency"][1], f"{sp}.min_proficiency", 1, 5)
                    if "min_proficiency" in sf
                    else None
                )
                add_langs: tuple[str, ...] = ()
                if "add_languages" in sf:
                    add_langs = w.strings(sf["add_languages"][1], f"{sp}.add_languages", _LANGUAGE)
                    for k, lang in enumerate(add_langs):
                        check_language(
                            w.seq(sf["add_languages"][1], "")[k], f"{sp}.add_languages[{k}]", lang
                        )
                drop = (
                    w.boolean(sf["drop_skills"][1], f"{sp}.drop_skills")
                    if "drop_skills" in sf
                    else False
                )
                overflow = ""
                if "overflow_to" in sf:
                    overflow = w.string(sf["overflow_to"][1], f"{sp}.overflow_to", _NAME)
                    if overflow not in queues:
                        raise w.fail(
                            sf["overflow_to"][1], f"{sp}.overflow_to", f"unknown queue {overflow!r}"
                        )
                    if overflow == qname:
                        raise w.fail(
                            sf["overflow_to"][1], f"{sp}.overflow_to", "overflows to its own queue"
                        )
                prio = (
                    w.integer(sf["priority"][1], f"{sp}.priority", 0, 100)
                    if "priority" in sf
                    else None
                )
                step = Step(sname, after, step_min, add_langs, drop, overflow, prio)
                if step.describe() == "no change":
                    raise w.fail(
                        snode,
                        sp,
                        "a step must change something (min_proficiency, add_languages, drop_skills, overflow_to or priority)",
                    )
                steps.append(step)
        queues[qname] = QueueConfig(
            qname, qskills, min_prof, threshold, target, window, tuple(steps)
        )

    default_queue = next(iter(queues))
    if "default_queue" in f:
        default_queue = w.string(f["default_queue"][1], f"{path}.default_queue", _NAME)
        if default_queue not in queues:
            raise w.fail(
                f["default_queue"][1], f"{path}.default_queue", f"unknown queue {default_queue!r}"
            )

    surge = _surge(w, f["surge"][1], f"{path}.surge", queues) if "surge" in f else []
    return TenantConfig(
        tenant=name,
        languages=languages,
        skills=skills,
        queues=queues,
        default_queue=default_queue,
        capacity=capacity,
        accept_timeout=timeouts,
        autopause_after=w.integer(f["autopause_after"][1], f"{path}.autopause_after", 0, 100)
        if "autopause_after" in f
        else 3,
        wrap_up_after=w.duration(f["wrap_up_after"][1], f"{path}.wrap_up_after")
        if "wrap_up_after" in f
        else 0.0,
        sticky_ttl=w.duration(f["sticky_ttl"][1], f"{path}.sticky_ttl")
        if "sticky_ttl" in f
        else 1800.0,
        break_reasons=w.strings(f["break_reasons"][1], f"{path}.break_reasons", _NAME)
        if "break_reasons" in f
        else (),
        surge=tuple(surge),
        urgent_priority=w.integer(f["urgent_priority"][1], f"{path}.urgent_priority", 0, 100)
        if "urgent_priority" in f
        else 5,
        yaml_text=text,
    )


# A level's fields; `raise` and `clear` each take `for`, and the earlier names of the same
# quantities (waiting_over, wait_longer_than, idle_for) are still read.
_RAISE_FIELDS = {"queued_over", "for", "queues", "waiting_over", "wait_longer_than"}
_CLEAR_FIELDS = {"idle_agents", "for", "idle_for"}


def _surge(
    w: ConfigReader, node: yaml.Node, path: str, queues: dict[str, QueueConfig]
) -> list[SurgeLevel]:
    levels: list[SurgeLevel] = []
    for i, lnode in enumerate(w.seq(node, path)):
        lp = f"{path}[{i}]"
        lf = w.mapping(lnode, lp, _SURGE_FIELDS)
        for req in ("level", "raise", "clear"):
            if req not in lf:
                raise w.fail(lnode, f"{lp}.{req}", "is required")
        level = w.integer(lf["level"][1], f"{lp}.level", 1, 9)
        if any(s.level == level for s in levels):
            raise w.fail(lf["level"][1], f"{lp}.level", f"level {level} defined twice")
        rnode, cnode = lf["raise"][1], lf["clear"][1]
        rf = w.mapping(rnode, f"{lp}.raise", _RAISE_FIELDS)
        cf = w.mapping(cnode, f"{lp}.clear", _CLEAR_FIELDS)

        def one_of(
            m: dict[str, tuple[yaml.Node, yaml.Node]], where: yaml.Node, p: str, *names: str
        ) -> yaml.Node:
            given = [n for n in names if n in m]
            if not given:
                raise w.fail(where, f"{p}.{names[0]}", "is required")
            if len(given) > 1:
                raise w.fail(m[given[1]][0], f"{p}.{given[1]}", f"the same as {given[0]}: give one")
            return m[given[0]][1]

        rp, cp = f"{lp}.raise", f"{lp}.clear"
        queued_over = w.integer(
            one_of(rf, rnode, rp, "queued_over", "waiting_over"), f"{rp}.queued_over", 0, 1_000_000
        )
        raise_for = w.duration(one_of(rf, rnode, rp, "for", "wait_longer_than"), f"{rp}.for")
        idle_agents = w.integer(
            one_of(cf, cnode, cp, "idle_agents"), f"{cp}.idle_agents", 0, 1_000_000
        )
        idle_for = w.duration(one_of(cf, cnode, cp, "for", "idle_for"), f"{cp}.for")
        watched: tuple[str, ...] = ()
        if "queues" in rf:
            qnode = rf["queues"][1]
            watched = w.strings(qnode, f"{rp}.queues", _NAME)
            for k, q in enumerate(watched):
                if q not in queues:
                    raise w.fail(w.seq(qnode, "")[k], f"{rp}.queues[{k}]", f"unknown queue {q!r}")
        actions: frozenset[str] = frozenset()
        if "actions" in lf:
            acts = w.strings(lf["actions"][1], f"{lp}.actions", _NAME)
            for k, act in enumerate(acts):
                if act not in SURGE_ACTIONS:
                    raise w.fail(
                        w.seq(lf["actions"][1], "")[k],
                        f"{lp}.actions[{k}]",
                        f"unknown action {act!r} (expected one of {sorted(SURGE_ACTIONS)})",
                    )
            actions = frozenset(acts)
        levels.append(
            SurgeLevel(level, queued_over, raise_for, idle_agents, idle_for, actions, watched)
        )
    return sorted(levels, key=lambda s: s.level)


def load_text(text: str, source: str = "router.yaml") -> RouterConfig:
    """Parse and validate a whole configuration file's text."""
    w = ConfigReader(source)
    root = w.mapping(compose(text, source), "", {"tenants", "defaults"})
    if "tenants" not in root and "defaults" not in root:
        raise ConfigError(source, 1, "tenants", "is required (or defaults, for every tenant)")
    tenants: dict[str, TenantConfig] = {}
    named = w.mapping(root["tenants"][1], "tenants", set()) if "tenants" in root else {}
    for name, (knode, vnode) in named.items():
        if not _NAME.match(name):
            raise w.fail(knode, f"tenants.{name}", "is not a valid tenant name")
        section = yaml.serialize(vnode)
        tenants[name] = _tenant(w, name, vnode, f"tenants.{name}", section)
    defaults = None
    if "defaults" in root:
        node = root["defaults"][1]
        defaults = _tenant(w, "", node, "defaults", yaml.serialize(node))
    return RouterConfig(tenants, defaults)


def load_tenant_text(tenant: str, text: str, source: str = "ApplyConfig") -> TenantConfig:
    """Parse and validate one tenant's section (the admin API's unit of change). Errors name the
    field as the whole file's would (``tenants.<tenant>.queues[0]...``), the line the section's."""
    w = ConfigReader(source)
    return _tenant(w, tenant, compose(text, source), f"tenants.{tenant}", text)


def load_file(path: Path) -> RouterConfig:
    return load_text(path.read_text(encoding="utf-8"), str(path))


def embedded_default() -> RouterConfig:
    """The configuration shipped with Switchboard: the demo tenant."""
    text = resources.files("switchboard.router").joinpath("router.yaml").read_text("utf-8")
    return load_text(text, "switchboard/router/router.yaml")
