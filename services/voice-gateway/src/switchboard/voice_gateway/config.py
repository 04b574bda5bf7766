"""The gateway's configuration: agents' phone credentials, the dialled-number plan and each
number's IVR menus. Read from YAML (VOICE_CONFIG) or the embedded default."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.events import TENANT_RE

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DTMF_KEYS = frozenset("0123456789*#")


class ConfigError(ValueError):
    pass


def duration(value: Any, where: str) -> float:
    if isinstance(value, int | float) and value >= 0:
        return float(value)
    m = _DURATION.match(str(value).strip())
    if not m:
        raise ConfigError(f"{where}: {value!r} is not a duration such as 15s")
    return float(m.group(1)) * _UNITS[m.group(2)]


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
    phones: dict[str, str]
    numbers: dict[str, NumberPlan]
    trunk: str = ""
    prompts: frozenset[str] = field(default_factory=frozenset)
    # Short codes an agent's phone may REFER to (blind transfer), code -> queue.
    transfer_codes: dict[str, str] = field(default_factory=dict)

    def plan_for(self, dialled: str) -> NumberPlan | None:
        """The plan for a dialled number, with or without the leading +."""
        digits = dialled.lstrip("+")
        return self.numbers.get("+" + digits) or self.numbers.get(digits)


def _menu(data: Any, where: str) -> Menu | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise ConfigError(f"{where}: needs a prompt and options {{key: value}}")
    options = {str(k): str(v) for k, v in data["options"].items()}
    for key in options:
        if key not in DTMF_KEYS:
            raise ConfigError(f"{where}.options: {key!r} is not a DTMF key")
    return Menu(str(data.get("prompt", "")), options)


def parse(data: Any) -> VoiceConfig:
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping")
    phones = {str(k): str(v) for k, v in (data.get("phones") or {}).items()}
    numbers: dict[str, NumberPlan] = {}
    prompts: set[str] = set()
    for number, spec in (data.get("numbers") or {}).items():
        where = f"numbers[{number}]"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: must be a mapping")
        tenant = str(spec.get("tenant", ""))
        if not TENANT_RE.match(tenant):
            raise ConfigError(f"{where}.tenant: {tenant!r} is not a tenant name")
        plan = NumberPlan(
            number=str(number),
            tenant=tenant,
            queue=str(spec.get("queue", "general")),
            language=str(spec.get("language", "en")),
            language_menu=_menu(spec.get("language_menu"), f"{where}.language_menu"),
            topic_menu=_menu(spec.get("topic_menu"), f"{where}.topic_menu"),
            menu_timeout=duration(spec.get("menu_timeout", "6s"), f"{where}.menu_timeout"),
            callback_key=str(spec.get("callback_key", "*")),
            announce_every=duration(spec.get("announce_every", "30s"), f"{where}.announce_every"),
        )
        if plan.callback_key and plan.callback_key not in DTMF_KEYS:
            raise ConfigError(f"{where}.callback_key: {plan.callback_key!r} is not a DTMF key")
        for menu in (plan.language_menu, plan.topic_menu):
            if menu and menu.prompt:
                prompts.add(menu.prompt)
        numbers["+" + str(number).lstrip("+")] = plan
    codes = data.get("transfer_codes") or {}
    if not isinstance(codes, dict):
        raise ConfigError("transfer_codes: must be a mapping {code: queue}")
    transfer_codes = {str(k): str(v) for k, v in codes.items()}
    for code, queue in transfer_codes.items():
        if not code or not queue:
            raise ConfigError(f"transfer_codes[{code}]: needs a code and a queue")
    return VoiceConfig(
        realm=str(data.get("realm", "switchboard")),
        phones=phones,
        numbers=numbers,
        trunk=str(data.get("trunk") or ""),
        prompts=frozenset(prompts),
        transfer_codes=transfer_codes,
    )


def load(path: str = "") -> VoiceConfig:
    if path:
        text = Path(path).read_text()
    else:
        text = (
            resources.files("switchboard.voice_gateway").joinpath("default_config.yaml").read_text()
        )
    return parse(yaml.safe_load(text))
