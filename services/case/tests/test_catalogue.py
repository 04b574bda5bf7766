"""The service catalogue's entries in the policy file: a wrong entry is refused with its file,
line and path; a form checks its fields; a contact's form holding a NUL is found as any text."""

from __future__ import annotations

from pathlib import Path

import pytest

from switchboard.case.handlers import nul_field
from switchboard.case.sla import policy
from switchboard.core.errors import InvalidArgument
from switchboard.v1 import contact_pb2, events_pb2

FORM = """\
templates:
  - name: access
    tenant: acme
    case_type: change
    priority: urgent
    skills: [account]
    catalogue:
      name: {en: Access, ko: 접근 권한}
      fields:
        - {name: door, kind: choice, required: true, choices: [{value: a, label: {en: Door A}}, b]}
        - {name: badge, kind: text, pattern: "[0-9]{4}", label: Badge}
        - {name: day, kind: date}
"""


def test_a_form_checks_its_fields_and_writes_label_lines(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(FORM)
    policies = policy.load(path)
    assert [t.name for t in policies.catalogue("acme")] == ["access"]
    assert policies.catalogue("demo") == []
    template = policies.template("acme", "access")
    assert template is not None and template.catalogue is not None
    assert template.contact_priority == 2 and template.skills == ("account",)
    form = template.catalogue
    checked = form.check({"door": " a ", "badge": "1234", "day": ""})
    assert checked == {"door": "a", "badge": "1234"}
    assert form.text(checked, "ko") == "door: Door A\nBadge: 1234"
    for values, message in (
        ({}, "fields.door: is required"),
        ({"door": "c"}, "fields.door: 'c' is not one of a, b"),
        ({"door": "b", "badge": "12345"}, "fields.badge: is not in the expected form"),
        ({"door": "b", "day": "15/01/2027"}, "fields.day: is not a date (YYYY-MM-DD)"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            form.check(values)
        assert str(refused.value) == message


@pytest.mark.parametrize(
    ("entry", "path", "problem"),
    [
        ("{name: x, kind: slider}", "fields[0].kind", "'slider' is not one of"),
        ("{name: x, kind: choice}", "fields[0].choices", "lists its choices"),
        ("{name: X-1}", "fields[0].name", "lower-case"),
        ('{name: x, pattern: "("}', "fields[0].pattern", "not a regular expression"),
    ],
)
def test_a_wrong_catalogue_entry_names_its_place(
    tmp_path: Path, entry: str, path: str, problem: str
) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text(
        "templates:\n  - name: t\n    catalogue:\n      name: T\n      fields:\n        - "
        + entry
        + "\n"
    )
    with pytest.raises(policy.PolicyError) as refused:
        policy.load(file)
    assert refused.value.path == f"templates[0].catalogue.{path}"
    assert problem in refused.value.problem and refused.value.line == 6


def test_a_nul_in_a_contacts_form_is_found() -> None:
    event = events_pb2.ContactCreated(
        contact=contact_pb2.Contact(contact_id="c", template="t", form={"a": "ok", "b": "x\x00"})
    )
    assert nul_field(event) == "contact.form['b']"
    event.contact.form["b"] = "fine"
    assert nul_field(event) == ""


@pytest.mark.parametrize(
    ("event", "path"),
    [
        # No other zero byte in the encoding.
        (
            events_pb2.MessageAdded(
                message=contact_pb2.Message(message_id="m", contact_id="c\x00")
            ),
            "message.contact_id",
        ),
        # Beside a zero byte that is no NUL (an empty message set).
        (
            events_pb2.ContactCreated(
                meta=events_pb2.EventMeta(),
                contact=contact_pb2.Contact(
                    contact_id="c",
                    identities=[contact_pb2.CustomerIdentity(value="a"), {"value": "b\x00"}],
                ),
            ),
            "contact.identities[1].value",
        ),
    ],
)
def test_a_nul_anywhere_is_found_beside_other_zero_bytes_or_none(event: object, path: str) -> None:
    assert nul_field(event) == path  # type: ignore[arg-type]


def test_an_event_without_a_nul_has_none_even_with_zero_bytes_in_its_encoding() -> None:
    event = events_pb2.ContactCreated(
        meta=events_pb2.EventMeta(), contact=contact_pb2.Contact(contact_id="c")
    )
    assert b"\x00" in event.SerializeToString()
    assert nul_field(event) == ""
