"""An audit entry's hash is SHA-256 over the previous hash and the entry's canonical JSON, whatever
its text holds: the chains written before stay verifiable."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from switchboard.core.hash_chain import canonical, entry_hash, utc

TEXTS = ["", "plain", 'quo"te\\back', "줄\n바꿈\t탭", "\x00\x1f\x7f\u2028\u2029", "😀 emoji", "é"]


def by_the_definition(prev: str, *fields: object) -> str:
    tenant, entity, entity_id, seq, at, actor, action, data = fields
    body = canonical(
        {
            "tenant": tenant,
            "entity": entity,
            "entity_id": entity_id,
            "seq": seq,
            "at": utc(at).isoformat(timespec="microseconds"),  # type: ignore[arg-type]
            "actor": actor,
            "action": action,
            "data": data,
        }
    )
    return hashlib.sha256((prev + body).encode()).hexdigest()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=9))),
        datetime(2026, 1, 2, 3, 4, 5, 123456),  # as SQLite gives it back: UTC without an offset
    ],
)
def test_an_entry_hashes_as_its_canonical_json(text: str, at: datetime) -> None:
    fields = ("acme", "case", f"id-{text}", 12345, at, f"agent:{text}", text, f"sealed:{text}")
    assert entry_hash("ab" * 32, *fields) == by_the_definition("ab" * 32, *fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"b": 1, "a": [1, 2.5, None, True, False], "c": {"z": "", "y": -0.0}},
        {"identities": [["IDENTITY_KIND_EMAIL", "a@example.com"]], "named_case": "C-7K3M9Q"},
        *({"text": text, text: [text]} for text in TEXTS),
        "a string alone",
        12345,
        [1e300, 1e-300, float("inf"), float("-inf")],
    ],
)
def test_canonical_json_is_the_sorted_compact_json_of_the_value(value: object) -> None:
    assert canonical(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
