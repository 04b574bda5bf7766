"""Keyword and form rules: what a fax is about (skill) and how urgent (priority).

Rules are YAML, per tenant, with an embedded default for the demo tenant (rules.yaml beside this
module); an error names the file, the line and the entry (switchboard.core.config). Matching ignores case and whitespace, because OCR of Chinese and Japanese often puts
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

import yaml

from switchboard.core.config import ConfigError, ConfigReader, compose, is_null

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


_TENANT_FIELDS = {"queue", "priority", "rules"}
_RULE_FIELDS = {"name", "keywords", "form", "skill", "priority", "language"}


def _strings(r: ConfigReader, node: yaml.Node, where: str) -> tuple[str, ...]:
    """One string or a list of non-empty strings."""
    nodes = r.seq(node, where) if isinstance(node, yaml.SequenceNode) else [node]
    found = []
    for i, item in enumerate(nodes):
        path = f"{where}[{i}]" if isinstance(node, yaml.SequenceNode) else where
        value = r.scalar(item, path)
        if not isinstance(value, str) or not value.strip():
            raise r.fail(item, path, "must be a string or a list of non-empty strings")
        found.append(value)
    return tuple(found)


def _rule(r: ConfigReader, node: yaml.Node, where: str, i: int) -> Rule:
    fields = {k: v for k, (_, v) in r.mapping(node, where, _RULE_FIELDS).items() if not is_null(v)}
    keywords = _strings(r, fields["keywords"], f"{where}.keywords") if "keywords" in fields else ()
    form = _strings(r, fields["form"], f"{where}.form") if "form" in fields else ()
    if not keywords and not form:
        raise r.fail(node, where, "needs keywords or form")
    return Rule(
        name=r.string(fields["name"], f"{where}.name") if "name" in fields else f"rule-{i + 1}",
        keywords=keywords,
        form=form,
        skill=r.string(fields["skill"], f"{where}.skill") if "skill" in fields else "",
        priority=r.integer(fields["priority"], f"{where}.priority", 0, 100)
        if "priority" in fields
        else 0,
        language=r.string(fields["language"], f"{where}.language") if "language" in fields else "",
    )


def parse(text: str, source: str = "fax rules") -> RuleBook:
    """Parse a rules document; a ConfigError (an InvalidArgument) names file, line and entry."""
    r = ConfigReader(source)
    root = r.mapping(compose(text, source), "", {"tenants"})
    if "tenants" not in root:
        raise ConfigError(source, 1, "tenants", "is required: {tenant: {rules: [...]}}")
    book: dict[str, TenantRules] = {}
    for tenant, (_, body) in r.mapping(root["tenants"][1], "tenants", set()).items():
        where = f"tenants.{tenant}"
        if is_null(body):
            book[tenant] = TenantRules()
            continue
        fields = {k: v for k, (_, v) in r.mapping(body, where, _TENANT_FIELDS).items()}
        rules = (
            [
                _rule(r, node, f"{where}.rules[{i}]", i)
                for i, node in enumerate(r.seq(fields["rules"], f"{where}.rules"))
            ]
            if "rules" in fields and not is_null(fields["rules"])
            else []
        )
        book[tenant] = TenantRules(
            queue=r.string(fields["queue"], f"{where}.queue") if "queue" in fields else "general",
            priority=r.integer(fields["priority"], f"{where}.priority", 0, 100)
            if "priority" in fields
            else 0,
            rules=tuple(rules),
        )
    return RuleBook(book)


def load(path: str = "") -> RuleBook:
    """The rules in `path`, or the embedded default when it is empty."""
    if path:
        return parse(Path(path).read_text(encoding="utf-8"), path)
    text = resources.files("switchboard.fax").joinpath("rules.yaml").read_text("utf-8")
    return parse(text, "switchboard/fax/rules.yaml")
