"""The customer portal's service catalogue: the request forms a case template offers customers
(its `catalogue` entry in the policy file, docs/portal.md), and the check of a filled form.

A form has a name and a description per language (ko, zh, en, ja) and fields of four kinds:
text (one line, optionally matching a pattern), multiline, choice (one of listed values) and date
(YYYY-MM-DD). A checked form becomes the text of the contact the portal publishes: one
"label: value" line per filled field, in the form's order."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from switchboard.core.config import ConfigError
from switchboard.core.errors import InvalidArgument
from switchboard.v1 import case_pb2

LANGUAGES = ("ko", "zh", "en", "ja")
KINDS = ("text", "multiline", "choice", "date")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
DEFAULT_MAX = {"text": 200, "multiline": 4000, "choice": 100, "date": 10}
MAX_FIELDS = 30


class CatalogueError(ConfigError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__("", 0, path, problem)


def localized(value: Any, where: str, required: bool = True) -> dict[str, str]:
    """{language: text}; a plain string is the text in every language."""
    if value is None or value == "":
        if required:
            raise CatalogueError(where, "is required (a text, or one per language)")
        return {}
    if isinstance(value, str):
        return dict.fromkeys(LANGUAGES, value)
    if not isinstance(value, Mapping):
        raise CatalogueError(where, "is a text or a mapping of languages to texts")
    unknown = set(map(str, value)) - set(LANGUAGES)
    if unknown:
        raise CatalogueError(where, f"unknown languages {sorted(unknown)}")
    texts = {str(k): str(v) for k, v in value.items() if v}
    if required and "en" not in texts:
        raise CatalogueError(where, "needs at least its English (en) text")
    return texts


def pick(texts: Mapping[str, str], language: str) -> str:
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    label: Mapping[str, str]
    required: bool = False
    choices: tuple[tuple[str, Mapping[str, str]], ...] = ()
    max_length: int = 0
    pattern: str = ""

    def check(self, raw: str) -> str:
        """The value as kept (trimmed); InvalidArgument("fields.<name>", ...) when wrong."""
        where = f"fields.{self.name}"
        value = raw.strip()
        if not value:
            if self.required:
                raise InvalidArgument(where, "is required")
            return ""
        if self.kind == "choice":
            if value not in (v for v, _ in self.choices):
                allowed = ", ".join(v for v, _ in self.choices)
                raise InvalidArgument(where, f"{value!r} is not one of {allowed}")
            return value
        if self.kind == "date":
            try:
                if len(value) != 10:
                    raise ValueError(value)
                date.fromisoformat(value)
            except ValueError:
                raise InvalidArgument(where, "is not a date (YYYY-MM-DD)") from None
            return value
        if self.kind == "text" and ("\n" in value or "\r" in value):
            raise InvalidArgument(where, "is one line")
        if len(value) > self.max_length:
            raise InvalidArgument(where, f"is longer than {self.max_length} characters")
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise InvalidArgument(where, "is not in the expected form")
        return value

    def shown(self, value: str, language: str) -> str:
        if self.kind == "choice":
            for v, label in self.choices:
                if v == value:
                    return pick(label, language) or v
        return value

    def to_proto(self) -> case_pb2.CatalogueField:
        return case_pb2.CatalogueField(
            name=self.name,
            kind=self.kind,
            required=self.required,
            label=dict(self.label),
            choices=[case_pb2.CatalogueChoice(value=v, label=dict(lb)) for v, lb in self.choices],
            max_length=self.max_length if self.kind in ("text", "multiline") else 0,
            pattern=self.pattern,
        )


@dataclass(frozen=True)
class Form:
    name: Mapping[str, str]
    description: Mapping[str, str]
    fields: tuple[Field, ...]

    def check(self, values: Mapping[str, str]) -> dict[str, str]:
        """The filled fields, checked in the form's order; the first wrong one raises."""
        unknown = sorted(set(values) - {f.name for f in self.fields})
        if unknown:
            raise InvalidArgument(f"fields.{unknown[0]}", "is not a field of this form")
        checked = {}
        for f in self.fields:
            value = f.check(values.get(f.name, ""))
            if value:
                checked[f.name] = value
        return checked

    def text(self, checked: Mapping[str, str], language: str) -> str:
        return "\n".join(
            f"{pick(f.label, language)}: {f.shown(checked[f.name], language)}"
            for f in self.fields
            if f.name in checked
        )


def _field(spec: Any, where: str) -> Field:
    if not isinstance(spec, Mapping):
        raise CatalogueError(where, "must be a mapping")
    name = str(spec.get("name", ""))
    if not NAME_RE.match(name):
        raise CatalogueError(f"{where}.name", "is lower-case letters, digits and _ (max 40)")
    kind = str(spec.get("kind", "text"))
    if kind not in KINDS:
        raise CatalogueError(f"{where}.kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    choices: list[tuple[str, Mapping[str, str]]] = []
    for j, choice in enumerate(spec.get("choices") or []):
        at = f"{where}.choices[{j}]"
        if isinstance(choice, Mapping):
            value = str(choice.get("value", ""))
            label = localized(choice.get("label"), f"{at}.label", required=False)
        else:
            value, label = str(choice), {}
        if not value:
            raise CatalogueError(f"{at}.value", "is required")
        choices.append((value, label or dict.fromkeys(LANGUAGES, value)))
    if kind == "choice" and not choices:
        raise CatalogueError(f"{where}.choices", "a choice field lists its choices")
    if kind != "choice" and choices:
        raise CatalogueError(f"{where}.choices", "only a choice field has choices")
    pattern = str(spec.get("pattern", ""))
    if pattern:
        if kind != "text":
            raise CatalogueError(f"{where}.pattern", "only a text field has a pattern")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CatalogueError(
                f"{where}.pattern", f"is not a regular expression: {exc}"
            ) from None
    max_length = int(spec.get("max_length", DEFAULT_MAX[kind]))
    if not 1 <= max_length <= 4000:
        raise CatalogueError(f"{where}.max_length", "is between 1 and 4000")
    return Field(
        name=name,
        kind=kind,
        label=localized(spec.get("label", name), f"{where}.label"),
        required=bool(spec.get("required", False)),
        choices=tuple(choices),
        max_length=max_length,
        pattern=pattern,
    )


def parse(spec: Any, where: str) -> Form | None:
    """A template's `catalogue` entry (None: the template is not offered in the portal)."""
    if spec is None or spec is False:
        return None
    if not isinstance(spec, Mapping):
        raise CatalogueError(where, "must be a mapping (name, description, fields)")
    raw_fields = spec.get("fields") or []
    if not isinstance(raw_fields, list) or not raw_fields or len(raw_fields) > MAX_FIELDS:
        raise CatalogueError(f"{where}.fields", f"lists 1 to {MAX_FIELDS} fields")
    fields = tuple(_field(f, f"{where}.fields[{i}]") for i, f in enumerate(raw_fields))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise CatalogueError(f"{where}.fields", "field names are unique")
    return Form(
        name=localized(spec.get("name"), f"{where}.name"),
        description=localized(spec.get("description"), f"{where}.description", required=False),
        fields=fields,
    )
