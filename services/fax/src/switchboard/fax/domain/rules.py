"""Keyword and form rules: what a fax is about (skill) and how urgent (priority).

Rules are YAML, per tenant, with an embedded default for the demo tenant (rules.yaml beside this
module). Matching ignores case and whitespace, because OCR of Chinese and Japanese often puts
spaces between characters, and of Latin text sometimes drops them.

    tenants:
      demo:
        queue: general
        rules:
          - name: billing
            keywords: [청구서, 账单, invoice]   # any of them
            skill: billing
          - name: claim-form
            form: [CLAIM FORM, Policy No]       # all of them: a known form's printed labels
            skill: claims
            priority: 2
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from switchboard.core.errors import InvalidArgument

_SPACE = re.compile(r"\s+")


def _fold(text: str) -> str:
    return _SPACE.sub("", text).casefold()


@dataclass(frozen=True)
class Rule:
    name: str
    keywords: tuple[str, ...] = ()
    form: tuple[str, ...] = ()
    skill: str = ""
    priority: int = 0
    language: str = ""  # only for faxes in this language, when set

    def matches(self, folded: str, language: str) -> bool:
        if self.language and not language.startswith(self.language):
            return False
        if self.form and not all(_fold(k) in folded for k in self.form):
            return False
        if self.keywords and not any(_fold(k) in folded for k in self.keywords):
            return False
        return bool(self.form or self.keywords)


@dataclass(frozen=True)
class Decision:
    skills: list[str] = field(default_factory=list)
    priority: int = 0
    queue: str = "general"
    matched: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TenantRules:
    queue: str = "general"
    priority: int = 0
    rules: tuple[Rule, ...] = ()

    def decide(self, text: str, language: str) -> Decision:
        """Every matching rule adds its skill (first match first); the priority is the highest."""
        folded = _fold(text)
        skills: list[str] = []
        matched: list[str] = []
        priority = self.priority
        for rule in self.rules:
            if rule.matches(folded, language):
                matched.append(rule.name)
                if rule.skill and rule.skill not in skills:
                    skills.append(rule.skill)
                priority = max(priority, rule.priority)
        return Decision(skills, priority, self.queue, matched)


@dataclass(frozen=True)
class RuleBook:
    tenants: dict[str, TenantRules]

    def for_tenant(self, tenant: str) -> TenantRules:
        return self.tenants.get(tenant) or self.tenants.get("*") or TenantRules()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
        return tuple(value)
    raise InvalidArgument(where, "must be a string or a list of non-empty strings")


def parse(text: str) -> RuleBook:
    """Parse a rules document, raising InvalidArgument that names the bad entry."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InvalidArgument("fax rules", f"not valid YAML: {exc}") from exc
    tenants = data.get("tenants") if isinstance(data, dict) else None
    if not isinstance(tenants, dict):
        raise InvalidArgument("fax rules", "must have a 'tenants' mapping")
    book: dict[str, TenantRules] = {}
    for tenant, body in tenants.items():
        body = body or {}
        if not isinstance(body, dict):
            raise InvalidArgument(f"tenants.{tenant}", "must be a mapping")
        rules = []
        for i, raw in enumerate(body.get("rules") or []):
            where = f"tenants.{tenant}.rules[{i}]"
            if not isinstance(raw, dict):
                raise InvalidArgument(where, "must be a mapping")
            keywords = _strings(raw.get("keywords"), f"{where}.keywords")
            form = _strings(raw.get("form"), f"{where}.form")
            if not keywords and not form:
                raise InvalidArgument(where, "needs keywords or form")
            try:
                priority = int(raw.get("priority", 0))
            except (TypeError, ValueError) as exc:
                raise InvalidArgument(f"{where}.priority", "must be an integer") from exc
            rules.append(
                Rule(
                    name=str(raw.get("name") or f"rule-{i + 1}"),
                    keywords=keywords,
                    form=form,
                    skill=str(raw.get("skill") or ""),
                    priority=priority,
                    language=str(raw.get("language") or ""),
                )
            )
        book[str(tenant)] = TenantRules(
            queue=str(body.get("queue") or "general"),
            priority=int(body.get("priority") or 0),
            rules=tuple(rules),
        )
    return RuleBook(book)


def load(path: str = "") -> RuleBook:
    """The rules in `path`, or the embedded default when it is empty."""
    if path:
        return parse(Path(path).read_text(encoding="utf-8"))
    return parse(resources.files("switchboard.fax").joinpath("rules.yaml").read_text("utf-8"))
