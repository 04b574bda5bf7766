"""The gateway's configuration: agents' phone credentials, the dialled-number plan and each
number's IVR menus. Read from YAML (VOICE_CONFIG_FILE) or the embedded default; an error names the
file, the line and the field (switchboard.core.config)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml

from switchboard.core.config import ConfigError, ConfigReader, compose, is_null
from switchboard.core.events import TENANT_RE
from switchboard.voice_gateway.recording import policy as recording_policy

__all__ = ["ConfigError", "Menu", "NumberPlan", "VoiceConfig", "load", "load_text"]

DTMF_KEYS = frozenset("0123456789*#")
_USER_RE = re.compile(r"^[^\s@]+$")  # a phone's user name


@dataclass(frozen=True)
class Menu:
    prompt: str
    options: dict[str, str]  # DTMF key -> language (language menu) or skill (topic menu)


@dataclass(frozen=True)
class NumberPlan:
    number: str
    tenant: str
    queue: str
    language: str
    language_menu: Menu | None = None
    topic_menu: Menu | None = None
    menu_timeout: float = 6.0
    callback_key: str = "*"
    announce_every: float = 30.0


@dataclass(frozen=True)
class VoiceConfig:
    realm: str
    # (tenant, agent id) -> SIP password: a phone belongs to one tenant's agent.
    phones: dict[tuple[str, str], str]
    numbers: dict[str, NumberPlan]
    trunk: str = ""
    prompts: frozenset[str] = field(default_factory=frozenset)
    # Short codes an agent's phone may REFER to (blind transfer), code -> queue.
    transfer_codes: dict[str, str] = field(default_factory=dict)
    # Which calls are recorded, and how long each tenant's recordings are kept.
    recording: recording_policy.RecordingPolicy = field(
        default_factory=recording_policy.RecordingPolicy
    )
    # Tenants whose callers stay, after the agent hangs up, for the satisfaction survey (1-5).
    survey_tenants: frozenset[str] = field(default_factory=frozenset)
    # The operators' recordings (<lang>/<prompt>.wav) and the music on hold (a WAV file); ""
    # for none. Relative paths are under the configuration file's folder.
    prompt_overrides: str = ""
    music_on_hold: str = ""
    # What a supervisor's phone dials to supervise an agent's call: the extension, then the
    # agent id (*55agent-en); "" turns it off. Only the phones of `supervisors` may.
    supervision_extension: str = "*55"
    supervisors: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # (tenant, user)

    @property
    def prompt_keys(self) -> frozenset[str]:
        """The keys a prompt may name: the language menus' options and the callback keys."""
        keys: set[str] = set()
        for plan in self.numbers.values():
            if plan.callback_key:
                keys.add(plan.callback_key)
            if plan.language_menu:
                keys.update(plan.language_menu.options)
        return frozenset(keys)

    def plan_for(self, dialled: str) -> NumberPlan | None:
        """The plan for a dialled number, with or without the leading +."""
        digits = dialled.lstrip("+")
        return self.numbers.get("+" + digits) or self.numbers.get(digits)


_NUMBER_FIELDS = {
    "tenant",
    "queue",
    "language",
    "language_menu",
    "topic_menu",
    "menu_timeout",
    "callback_key",
    "announce_every",
}


def _text(r: ConfigReader, node: yaml.Node, path: str) -> str:
    """A scalar as text (YAML reads `1` or `*` keys and values as they are written)."""
    value = r.scalar(node, path)
    if value is None or isinstance(value, bool | dict | list):
        raise r.fail(node, path, "must be a single value")
    return str(value)


def _dtmf_key(r: ConfigReader, node: yaml.Node, path: str) -> str:
    key = _text(r, node, path)
    if key not in DTMF_KEYS:
        raise r.fail(node, path, f"{key!r} is not a DTMF key (0-9, * or #)")
    return key


def _menu(r: ConfigReader, node: yaml.Node, path: str) -> Menu:
    fields = r.mapping(node, path, {"prompt", "options"})
    if "options" not in fields:
        raise r.fail(node, f"{path}.options", "is required: {key: value}")
    options: dict[str, str] = {}
    for key, (knode, vnode) in r.mapping(fields["options"][1], f"{path}.options", set()).items():
        options[_dtmf_key(r, knode, f"{path}.options.{key}")] = _text(
            r, vnode, f"{path}.options.{key}"
        )
    prompt = r.string(fields["prompt"][1], f"{path}.prompt") if "prompt" in fields else ""
    return Menu(prompt, options)


def _plan(r: ConfigReader, number: str, node: yaml.Node, path: str) -> NumberPlan:
    fields = r.mapping(node, path, _NUMBER_FIELDS)

    def value(name: str) -> yaml.Node | None:
        return fields[name][1] if name in fields else None

    if "tenant" not in fields:
        raise r.fail(node, f"{path}.tenant", "is required")
    tenant = r.string(fields["tenant"][1], f"{path}.tenant", TENANT_RE)
    plan = NumberPlan(
        number=number,
        tenant=tenant,
        queue=r.string(n, f"{path}.queue") if (n := value("queue")) else "general",
        language=r.string(n, f"{path}.language") if (n := value("language")) else "en",
        language_menu=_menu(r, n, f"{path}.language_menu")
        if (n := value("language_menu"))
        else None,
        topic_menu=_menu(r, n, f"{path}.topic_menu") if (n := value("topic_menu")) else None,
        menu_timeout=r.duration(n, f"{path}.menu_timeout") if (n := value("menu_timeout")) else 6.0,
        callback_key=_dtmf_key(r, n, f"{path}.callback_key")
        if (n := value("callback_key"))
        else "*",
        announce_every=(
            r.duration(n, f"{path}.announce_every") if (n := value("announce_every")) else 30.0
        ),
    )
    return plan


def _phones(
    r: ConfigReader, section: dict[str, tuple[yaml.Node, yaml.Node]], tenants: set[str]
) -> dict[tuple[str, str], str]:
    """`phones: {tenant: {agent: password}}`; the older flat `phones: {agent: password}` only
    where every number belongs to one tenant (whose phones they then are)."""
    phones: dict[tuple[str, str], str] = {}
    for key, (knode, vnode) in section.items():
        path = f"phones.{key}"
        if not isinstance(vnode, yaml.MappingNode):  # the flat form: agent -> password
            if len(tenants) != 1:
                raise r.fail(
                    knode,
                    path,
                    "give each tenant's phones under its name (phones: {tenant: {agent: "
                    f"password}}}}): the numbers serve {len(tenants)} tenants, so a bare agent id "
                    "names no tenant",
                )
            phones[(next(iter(tenants)), key)] = _text(r, vnode, path)
            continue
        if not TENANT_RE.match(key):
            raise r.fail(knode, path, f"{key!r} is not a tenant name")
        for agent, (_, pnode) in r.mapping(vnode, path, set()).items():
            phones[(key, agent)] = _text(r, pnode, f"{path}.{agent}")
    return phones


def _supervision(
    r: ConfigReader,
    entry: tuple[yaml.Node, yaml.Node] | None,
    phones: dict[tuple[str, str], str],
) -> tuple[str, frozenset[tuple[str, str]]]:
    """`supervision: {extension: "*55", supervisors: {tenant: [user, ...]}}`: each supervisor
    is a phone of `phones` (its SIP credentials authenticate what it dials)."""
    if entry is None or is_null(entry[1]):
        return "*55", frozenset()
    fields = r.mapping(entry[1], "supervision", {"extension", "supervisors"})
    extension = "*55"
    if "extension" in fields:
        node = fields["extension"][1]
        extension = "" if is_null(node) else str(r.scalar(node, "supervision.extension"))
        if extension and not set(extension) <= DTMF_KEYS:
            raise r.fail(node, "supervision.extension", "must be dialable keys (0-9, * and #)")
    supervisors: set[tuple[str, str]] = set()
    if "supervisors" in fields and not is_null(fields["supervisors"][1]):
        tenants = r.mapping(fields["supervisors"][1], "supervision.supervisors", set())
        for tenant, (_, node) in tenants.items():
            path = f"supervision.supervisors.{tenant}"
            users = r.strings(node, path, _USER_RE)
            for i, user in enumerate(users):
                if (tenant, user) not in phones:
                    raise r.fail(
                        r.seq(node, path)[i], f"{path}[{i}]", f"{user!r} has no phone in phones"
                    )
                supervisors.add((tenant, user))
    return extension, frozenset(supervisors)


def load_text(text: str, source: str = "voice.yaml") -> VoiceConfig:
    """Parse and validate a configuration's text; a ConfigError names file, line and field."""
    r = ConfigReader(source)
    root = r.mapping(
        compose(text, source),
        "",
        {
            "realm",
            "phones",
            "trunk",
            "transfer_codes",
            "numbers",
            "recording",
            "survey_tenants",
            "prompts",
            "supervision",
        },
    )

    def section(name: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if name not in root or is_null(root[name][1]):
            return {}
        return r.mapping(root[name][1], name, set())

    numbers: dict[str, NumberPlan] = {}
    prompts: set[str] = set()
    for number, (_, vnode) in section("numbers").items():
        plan = _plan(r, number, vnode, f"numbers.{number}")
        for menu in (plan.language_menu, plan.topic_menu):
            if menu and menu.prompt:
                prompts.add(menu.prompt)
        numbers["+" + number.lstrip("+")] = plan
    phones = _phones(r, section("phones"), {p.tenant for p in numbers.values()})
    transfer_codes = {
        code: r.string(vnode, f"transfer_codes.{code}")
        for code, (_, vnode) in section("transfer_codes").items()
    }
    realm = r.string(root["realm"][1], "realm") if "realm" in root else "switchboard"
    prompt_files = {
        name: r.string(vnode, f"prompts.{name}")
        for name, (_, vnode) in (
            r.mapping(root["prompts"][1], "prompts", {"overrides", "music_on_hold"}).items()
            if "prompts" in root and not is_null(root["prompts"][1])
            else ()
        )
    }
    trunk = r.scalar(root["trunk"][1], "trunk") if "trunk" in root else ""
    surveyed = (
        r.strings(root["survey_tenants"][1], "survey_tenants", TENANT_RE)
        if "survey_tenants" in root and not is_null(root["survey_tenants"][1])
        else ()
    )
    extension, supervisors = _supervision(r, root.get("supervision"), phones)
    return VoiceConfig(
        supervision_extension=extension,
        supervisors=supervisors,
        survey_tenants=frozenset(surveyed),
        realm=realm,
        phones=phones,
        numbers=numbers,
        trunk=str(trunk or ""),
        prompts=frozenset(prompts),
        transfer_codes=transfer_codes,
        recording=recording_policy.parse(r, root["recording"][1] if "recording" in root else None),
        prompt_overrides=prompt_files.get("overrides", ""),
        music_on_hold=prompt_files.get("music_on_hold", ""),
    )


def load(path: str = "") -> VoiceConfig:
    """The configuration in the file at `path`, or the embedded default."""
    if path:
        cfg = load_text(Path(path).read_text(encoding="utf-8"), path)
        here = Path(path).parent
        return replace(
            cfg,
            prompt_overrides=str(here / cfg.prompt_overrides) if cfg.prompt_overrides else "",
            music_on_hold=str(here / cfg.music_on_hold) if cfg.music_on_hold else "",
        )
    text = resources.files("switchboard.voice_gateway").joinpath("default_config.yaml").read_text()
    return load_text(text, "switchboard/voice_gateway/default_config.yaml")
