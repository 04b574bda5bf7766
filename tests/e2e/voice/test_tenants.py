"""Phones belong to a tenant: two client companies may each have an agent "a1", and a call to one
company's number rings only that company's phone; a phone's SIP user name (agent@tenant) binds its
password to its tenant."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Baresip, Voice, raw_phone

DEMO_LINE = "+15550100"
ACME_LINE = "+15550200"


@pytest.fixture
def gateway_config() -> dict[str, Any]:
    return {
        "realm": "switchboard",
        "phones": {"demo": {"a1": "pw-demo-a1"}, "acme": {"a1": "pw-acme-a1"}},
        "numbers": {
            DEMO_LINE: {"tenant": "demo", "queue": "general", "language": "en"},
            ACME_LINE: {"tenant": "acme", "queue": "general", "language": "en"},
        },
    }


async def _call(voice: Voice, name: str, number: str, line: str) -> str:
    caller = await voice.caller(name, number)
    await caller.command("dial", voice.dial_uri(line))
    await caller.wait_event("CALL_ESTABLISHED")
    created = await voice.events.wait(
        "ContactCreated", where=lambda e: e.contact.identities[0].value == number
    )
    return str(created[0].contact.contact_id)


async def _answered(voice: Voice, phone: Baresip, caller: str, line: str, tenant: str) -> str:
    """`caller` dials `line`; `phone` rings and answers, and tenant's agent a1 is assigned."""
    contact_id = await _call(voice, f"caller-{caller}", caller, line)
    await phone.wait_event("CALL_INCOMING", timeout=20)
    await phone.command("accept")
    assigned = (await voice.events.wait("ContactAssigned", contact_id, timeout=30))[0]
    assert assigned.agent_id == "a1" and assigned.meta.tenant == tenant
    return contact_id


async def test_a_call_to_one_tenants_number_rings_only_that_tenants_phone(voice: Voice) -> None:
    demo_phone = await voice.phone("a1", tenant="demo", password="pw-demo-a1")
    acme_phone = await voice.phone("a1", tenant="acme", password="pw-acme-a1")
    registrar = voice.gateway.gateway.registrar  # type: ignore[union-attr]
    demo_binding = registrar.lookup("demo", "a1")
    acme_binding = registrar.lookup("acme", "a1")
    assert demo_binding is not None and acme_binding is not None
    assert demo_binding.contact != acme_binding.contact

    await voice.agent("a1", {"en": 5}, tenant="demo")
    contact_id = await _answered(voice, demo_phone, "+821011110000", DEMO_LINE, "demo")
    await voice.relayed_both_ways(contact_id, packets=5)
    assert acme_phone.count("CALL_INCOMING") == 0

    # And the other way round: acme's caller reaches acme's a1, never demo's.
    await voice.agent("a1", {"en": 5}, tenant="acme")
    await _answered(voice, acme_phone, "+821022220000", ACME_LINE, "acme")
    assert demo_phone.count("CALL_INCOMING") == 1


async def test_a_phone_cannot_register_with_another_tenants_password(voice: Voice) -> None:
    # acme's password under demo's user name: refused, and demo's binding stays absent.
    phone = await raw_phone("a1", "pw-acme-a1", username="a1@demo")
    challenge = await phone.send_register(voice.sip_port, 1)
    refused = await phone.send_register(
        voice.sip_port, 2, phone.authorization(challenge, voice.sip_port)
    )
    assert refused.status == 403
    assert voice.gateway.gateway.registrar.lookup("demo", "a1") is None  # type: ignore[union-attr]
    # A bare agent id is ambiguous when two tenants have phones: it is no user.
    bare = await raw_phone("a1", "pw-acme-a1")
    challenge = await bare.send_register(voice.sip_port, 1)
    refused = await bare.send_register(
        voice.sip_port, 2, bare.authorization(challenge, voice.sip_port)
    )
    assert refused.status == 403
