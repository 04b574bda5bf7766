"""The router's journaled inputs as typed commands (``switchboard.v1.RouterCommand``).

Every input the leader decides is one engine method call. The journal keeps it as a protobuf
command, not as a pickled call: the journal outlives any one version of the engine's code (a
refactor renames or reorders a method's arguments; the command's fields stay), and a replica
never unpickles what it reads from NATS.

`encode` turns an engine call into a command; `decode` turns a command back into the call that
replay makes. A configuration is journaled as the YAML the leader parsed (plus the accept
timeouts the deployment's settings impose over it), and parsed again on replay.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from switchboard.router.domain import config as cfg
from switchboard.router.domain.engine import Engine, Presence
from switchboard.v1 import router_journal_pb2 as pb

Command = pb.RouterCommand


class JournalFormatError(Exception):
    """A journal entry this replica cannot replay: not the journal's format, or a newer one."""


@dataclass(frozen=True)
class Call:
    """One journaled input: the engine method, its arguments, and when it was decided."""

    name: str
    at: float
    args: tuple[Any, ...]
    check: tuple[str, ...] | None = None  # the decisions it recorded (None: not recorded)


# ---- configuration ---------------------------------------------------------------------------


def _section(tenant: cfg.TenantConfig) -> Command.TenantSection:
    section = Command.TenantSection(tenant=tenant.tenant, yaml=tenant.yaml_text)
    if _parsed(section).accept_timeout != tenant.accept_timeout:
        section.accept_timeout.update(tenant.accept_timeout)
    if _tenant(section) != tenant:
        raise ValueError(
            f"tenant {tenant.tenant!r}: a configuration can be journaled only as it was loaded "
            "from YAML (with accept timeouts from the settings)"
        )
    return section


def _parsed(section: Command.TenantSection) -> cfg.TenantConfig:
    if not section.yaml:
        return cfg.fallback_tenant(section.tenant)
    return cfg.load_tenant_text(section.tenant, section.yaml, "the router's journal")


def _tenant(section: Command.TenantSection) -> cfg.TenantConfig:
    tenant = _parsed(section)
    if section.accept_timeout:
        tenant = replace(tenant, accept_timeout=dict(section.accept_timeout))
    return tenant


def _file_config(config: cfg.RouterConfig) -> Command.ApplyFileConfig:
    out = Command.ApplyFileConfig(tenants=[_section(t) for t in config.tenants.values()])
    if config.defaults is not None:
        out.defaults.CopyFrom(_section(config.defaults))
    return out


def _router_config(command: Command.ApplyFileConfig) -> cfg.RouterConfig:
    tenants = {section.tenant: _tenant(section) for section in command.tenants}
    defaults = _tenant(command.defaults) if command.HasField("defaults") else None
    return cfg.RouterConfig(tenants, defaults)


# ---- calls <-> commands ------------------------------------------------------------------------

# Engine method -> (fill the command from the call's arguments, the call's arguments from it).
_Encode = Callable[[Command, tuple[Any, ...]], None]
_Decode = Callable[[Command], tuple[Any, ...]]


def _add_contact(c: Command, a: tuple[Any, ...]) -> None:
    c.add_contact.contact.CopyFrom(a[0])
    c.add_contact.traceparent = a[1] if len(a) > 1 else ""


def _sign_in(c: Command, a: tuple[Any, ...]) -> None:
    tenant, agent_id, display_name, languages, skills, *rest = a
    capacity = rest[0] if rest else None
    presence = rest[1] if len(rest) > 1 else Presence.AVAILABLE
    m = c.sign_in
    m.tenant, m.agent_id, m.display_name = tenant, agent_id, display_name
    m.languages.update(languages)
    m.skills.update(skills)
    m.capacity.update(capacity or {})
    m.presence = int(presence)


def _set_presence(c: Command, a: tuple[Any, ...]) -> None:
    tenant, agent_id, presence, reason, *rest = a
    m = c.set_presence
    m.tenant, m.agent_id, m.presence, m.reason = tenant, agent_id, int(presence), reason
    m.force = bool(rest[0]) if rest else False
    m.by = rest[1] if len(rest) > 1 else ""


def _set_file_config(c: Command, a: tuple[Any, ...]) -> None:
    c.apply_file_config.CopyFrom(_file_config(a[0]))


def _set_tenant_config(c: Command, a: tuple[Any, ...]) -> None:
    c.apply_tenant_config.tenant.CopyFrom(_section(a[0]))
    if len(a) > 1 and a[1]:
        c.apply_tenant_config.actor = a[1]


def _tenant_config_args(c: Command) -> tuple[Any, ...]:
    m = c.apply_tenant_config
    return (_tenant(m.tenant), m.actor) if m.actor else (_tenant(m.tenant),)


def _fields(field: str, *names: str) -> tuple[_Encode, _Decode]:
    """A command whose arguments are its message's scalar fields, in order."""

    def encode(c: Command, a: tuple[Any, ...]) -> None:
        m = getattr(c, field)
        m.SetInParent()
        for name, value in zip(names, a, strict=True):
            setattr(m, name, value)

    def decode(c: Command) -> tuple[Any, ...]:
        m = getattr(c, field)
        return tuple(getattr(m, name) for name in names)

    return encode, decode


_CODECS: dict[str, tuple[str, _Encode, _Decode]] = {
    "add_contact": (
        "add_contact",
        _add_contact,
        lambda c: (c.add_contact.contact, c.add_contact.traceparent),
    ),
    "withdraw_contact": ("withdraw_contact", *_fields("withdraw_contact", "contact_id", "reason")),
    "channel_ended": ("channel_ended", *_fields("channel_ended", "contact_id")),
    "transfer": ("transfer", *_fields("transfer", "tenant", "contact_id", "queue", "agent_id")),
    "set_hold": ("set_hold", *_fields("set_hold", "tenant", "agent_id", "contact_id", "held")),
    "set_connected": (
        "set_connected",
        *_fields("set_connected", "tenant", "agent_id", "connected"),
    ),
    "accept": ("accept", *_fields("accept", "tenant", "agent_id", "offer_id")),
    "decline": ("decline", *_fields("decline", "tenant", "agent_id", "offer_id", "reason")),
    "wrap_up": ("wrap_up", *_fields("wrap_up", "tenant", "agent_id", "contact_id", "code")),
    "sign_in": (
        "sign_in",
        _sign_in,
        lambda c: (
            c.sign_in.tenant,
            c.sign_in.agent_id,
            c.sign_in.display_name,
            dict(c.sign_in.languages),
            dict(c.sign_in.skills),
            dict(c.sign_in.capacity),
            Presence(c.sign_in.presence),
        ),
    ),
    "sign_out": ("sign_out", *_fields("sign_out", "tenant", "agent_id", "by")),
    "set_presence": (
        "set_presence",
        _set_presence,
        lambda c: (
            c.set_presence.tenant,
            c.set_presence.agent_id,
            Presence(c.set_presence.presence),
            c.set_presence.reason,
            c.set_presence.force,
            c.set_presence.by,
        ),
    ),
    "tick": ("tick", *_fields("tick")),
    "begin_term": ("begin_term", *_fields("begin_term", "term")),
    "disconnect_all": ("disconnect_all", *_fields("disconnect_all")),
    "apply_file_config": (
        "apply_file_config",
        _set_file_config,
        lambda c: (_router_config(c.apply_file_config),),
    ),
    "apply_tenant_config": (
        "apply_tenant_config",
        _set_tenant_config,
        _tenant_config_args,
    ),
}
_BY_FIELD = {field: (name, decode) for name, (field, _, decode) in _CODECS.items()}


def journaled(name: str) -> bool:
    """Whether `name` is an engine input the journal can hold."""
    return name in _CODECS


def encode_command(
    name: str, at: float, args: tuple[Any, ...], check: tuple[str, ...] = ()
) -> Command:
    """The command for the engine call `name(*args)`, decided at `at`."""
    try:
        _, fill, _ = _CODECS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a journaled router input") from None
    command = Command(at=at, check=check)
    fill(command, _with_defaults(name, args))
    return command


@cache
def _parameters(name: str) -> tuple[inspect.Parameter, ...]:
    """The parameters of the engine method `name`, after self."""
    return tuple(inspect.signature(getattr(Engine, name)).parameters.values())[1:]


def _with_defaults(name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """`args` with the engine method's defaults for the trailing arguments a caller left out: the
    command records what the engine is called with, and replay calls it with all of them."""
    params = _parameters(name)
    if len(args) >= len(params):
        return args
    missing = params[len(args) :]
    if any(p.default is inspect.Parameter.empty for p in missing):
        raise TypeError(f"{name}() is missing {', '.join(p.name for p in missing)}")
    return (*args, *(p.default for p in missing))


def decode_command(command: Command) -> Call:
    """The engine call a command replays."""
    field = command.WhichOneof("command")
    if field is None:
        raise JournalFormatError(
            "a command of a kind this replica does not know (written by a newer router?)"
        )
    name, args = _BY_FIELD[field]
    return Call(name, command.at, args(command), tuple(command.check))
