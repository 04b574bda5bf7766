"""Pure rules of the case service: lifecycle, references, identities, calendars, the policy file."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from switchboard.case.domain import identity, lifecycle, reference
from switchboard.case.quality import load_form, load_forms
from switchboard.case.sla.calendar import Calendar, parse_calendar
from switchboard.case.sla.policy import PolicyError, load, parse
from switchboard.core.errors import FailedPrecondition, InvalidArgument
from switchboard.v1 import case_pb2, contact_pb2


def test_transitions() -> None:
    path = [
        lifecycle.NEW,
        lifecycle.ASSIGNED,
        lifecycle.IN_PROGRESS,
        lifecycle.PENDING,
        lifecycle.IN_PROGRESS,
        lifecycle.RESOLVED,
        lifecycle.IN_PROGRESS,  # reopened
        lifecycle.RESOLVED,
        lifecycle.CLOSED,
    ]
    for a, b in itertools.pairwise(path):
        lifecycle.check(a, b)
    assert lifecycle.is_reopen(lifecycle.RESOLVED, lifecycle.IN_PROGRESS)
    with pytest.raises(FailedPrecondition, match="cannot go from closed to in_progress"):
        lifecycle.check(lifecycle.CLOSED, lifecycle.IN_PROGRESS)
    with pytest.raises(FailedPrecondition, match="cannot go from new to closed"):
        lifecycle.check(lifecycle.NEW, lifecycle.CLOSED)
    with pytest.raises(FailedPrecondition, match="cannot go from pending_customer to assigned"):
        lifecycle.check(lifecycle.PENDING, lifecycle.ASSIGNED)


def test_references() -> None:
    refs = {reference.new_reference() for _ in range(200)}
    assert len(refs) == 200
    assert all(reference.looks_like_reference(r) for r in refs)
    assert not any(set(r[2:]) & set("01IO") for r in refs)
    assert reference.normalise("#c-7k3m9q") == "C-7K3M9Q"
    assert reference.looks_like_reference("c-7k3m9q")
    assert not reference.looks_like_reference("0123456789abcdef")


def test_reference_letters_are_equally_likely_everywhere() -> None:
    assert len(reference.ALPHABET) == 2**reference.BITS
    refs = [reference.new_reference()[2:] for _ in range(4000)]
    for position in range(reference.LENGTH):
        counts = {c: 0 for c in reference.ALPHABET}
        for r in refs:
            counts[r[position]] += 1
        # 125 expected each; a letter never or twice as often drawn would be a bias.
        assert all(40 < n < 250 for n in counts.values()), (position, counts)


def test_identities_normalise() -> None:
    phone, email = contact_pb2.IDENTITY_KIND_PHONE, contact_pb2.IDENTITY_KIND_EMAIL
    assert identity.normalise(phone, "+82 10-1234-5678") == "+821012345678"
    assert identity.normalise(phone, "010-1234-5678", "KR") == "+821012345678"
    assert identity.normalise(phone, "(030) 1234567", "DE") == "+49301234567"
    assert identity.normalise(email, " Ana@Example.COM ") == "ana@example.com"
    with pytest.raises(InvalidArgument, match="not a phone number"):
        identity.normalise(phone, "anonymous", "KR")
    with pytest.raises(InvalidArgument):
        identity.normalise(phone, "010-1234-5678")  # national, and no region to read it in


BERLIN = parse_calendar(
    "berlin",
    {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}, "holidays": ["2026-12-25"]},
)


def test_business_seconds_over_a_weekend_and_a_holiday() -> None:
    friday_4pm = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)  # 16:00 Berlin
    monday_10am = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 10:00 Berlin
    assert BERLIN.business_seconds(friday_4pm, monday_10am) == 2 * 3600
    assert BERLIN.add(friday_4pm, 2 * 3600) == monday_10am
    christmas_eve = datetime(2026, 12, 24, 15, 0, tzinfo=UTC)
    boxing_day = datetime(2026, 12, 26, 15, 0, tzinfo=UTC)  # a Saturday
    assert BERLIN.business_seconds(christmas_eve, boxing_day) == 3600
    assert BERLIN.business_seconds(monday_10am, friday_4pm) == 0


def test_business_seconds_across_a_time_change() -> None:
    # Berlin leaves summer time on 2026-10-25: Friday 16:00 CEST to Monday 10:00 CET.
    friday = datetime(2026, 10, 23, 14, 0, tzinfo=UTC)
    monday = datetime(2026, 10, 26, 9, 0, tzinfo=UTC)
    assert BERLIN.business_seconds(friday, monday) == 2 * 3600
    always = Calendar("24x7", always_open=True)
    assert always.business_seconds(friday, monday) == (monday - friday).total_seconds()


def test_policy_file() -> None:
    policies = load(None)  # the embedded default
    demo = policies.policy_for("demo", "", case_pb2.CASE_PRIORITY_NORMAL)
    urgent = policies.policy_for("demo", "", case_pb2.CASE_PRIORITY_URGENT)
    assert demo is not None and demo.name == "demo-standard"
    assert urgent is not None and urgent.name == "demo-urgent"
    assert policies.policy_for("acme", "", case_pb2.CASE_PRIORITY_NORMAL) is None
    assert [r.at for r in demo.escalations] == [75, 100]
    assert policies.template("acme", "password-reset") is not None
    assert policies.auto_close("demo") == timedelta(days=7)
    task = policies.tasks[0]
    runs = task.occurrences(datetime(2026, 11, 15, tzinfo=UTC), datetime(2027, 1, 15, tzinfo=UTC))
    assert [r.date() for r in runs] == [date(2026, 12, 1), date(2027, 1, 1)]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"sla_policies": [{"calendar": "nowhere"}]}, "unknown calendar"),
        ({"sla_policies": [{"resolution": "soon"}]}, "is not a duration"),
        (
            {"sla_policies": [{"escalation": [{"kind": "functional", "level": "manager"}]}]},
            "functional level",
        ),
        (
            {"sla_policies": [{"escalation": [{"level": "vendor", "actions": ["fax"]}]}]},
            "unknown actions",
        ),
        ({"recurring": [{"name": "x", "tenant": "demo", "template": "none"}]}, "unknown template"),
        ({"templates": [{"name": "t", "priority": "asap"}]}, "is not one of"),
        *(
            (
                {
                    "templates": [{"name": "t"}],
                    "recurring": [{"name": "x", "tenant": "demo", "template": "t", **wrong}],
                },
                rf"recurring\[0\]\.{next(iter(wrong))}: {problem}",
            )
            for wrong, problem in (
                ({"timezone": "Mars/Olympus"}, "unknown time zone"),
                ({"at": "25:00"}, "must be a time of day"),
                ({"day": "first"}, "must be a number"),
            )
        ),
    ],
)
def test_policy_errors_name_the_entry(doc: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse(doc)


def test_a_policy_file_error_names_its_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "sla_policies:\n"
        "  - name: standard\n"
        "    resolution: 8h\n"
        "    escalation:\n"
        "      - {at: 50, level: first_line}\n"
        "      - kind: functional\n"
        "        level: manager\n"
    )
    with pytest.raises(PolicyError) as refused:
        load(path)
    assert str(refused.value).startswith(
        f"{path}:6: sla_policies[0].escalation[1]: a functional level is one of"
    )
    path.write_text("sla_policies:\n  - name: standard\n    resolution: soon\n")
    with pytest.raises(PolicyError, match=r"policy\.yaml:3: sla_policies\[0\]\.resolution: 'soon'"):
        load(path)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("id: f\n", "QA form:1: items: is required"),
        ("id: f\nitems: []\n", "QA form:2: items: needs at least one item"),
        ("id: f\nitems:\n  - {id: a, wieght: 2}\n", "QA form:3: items[0].wieght: unknown field"),
        ("id: f\nitems:\n  - {id: a}\n  - {id: a}\n", "QA form:4: items[1].id: 'a' appears twice"),
        (
            "id: f\nitems:\n  - {id: a, weight: -1}\n",
            "QA form:3: items[0].weight: must be a number",
        ),
        ("id: f\nitems:\n  - {id: a, fatal: maybe}\n", "items[0].fatal: must be true or false"),
    ],
)
def test_a_qa_form_mistake_names_its_line_and_field(text: str, error: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        load_form(text)
    assert error in str(refused.value)


def test_the_default_qa_form_loads() -> None:
    form = load_forms()["default"]
    assert any(item.fatal for item in form.items) and form.title
