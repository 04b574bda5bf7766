"""Erasing a customer reaches the chat's key-value bucket across services: the case service
commits the erasure, its outbox publishes CustomerErased, and the chat purges the customer's
conversation record, while another visitor's stays (real case, router and chat apps; NATS
anonymous and with each service as its own user)."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.case.adapters import orm
from switchboard.chat.domain.commands import CustomerMessage
from switchboard.chat.domain.model import CustomerProfile
from switchboard.core import auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc

Platform = Any  # tests/e2e/conftest.py: the platform fixture

ANA = CustomerProfile("demo", "Ana Kim", "ko", "ana@example.kr", "", "visitor-ana")
BO = CustomerProfile("demo", "Bo Lee", "ko", "bo@example.kr", "", "visitor-bo")


@pytest.mark.parametrize("nats_access", ["anonymous", "authorised"], indirect=True)
async def test_erasing_a_customer_purges_their_chat_conversation(platform: Platform) -> None:
    chat = platform.chat.chat
    sessions = platform.case.sessions
    assert chat is not None and sessions is not None
    ana = await chat.customer_message(ANA, "visitor-ana", CustomerMessage("환불 문의드립니다"))
    bo = await chat.customer_message(BO, "visitor-bo", CustomerMessage("배송 문의"))

    async def customer() -> str | None:
        async with sessions() as session:
            row = await session.get(orm.Contact, ana.contact_id)
            return row.customer_id if row is not None else None

    customer_id = await eventually(customer, "the chat recorded by the case service")
    assert await chat.store.get("demo", ana.contact_id) is not None

    token = auth.mint(platform.secret, "demo", "dpo-1", ["admin"])
    async with sb_grpc.channel(platform.case_target, token) as ch:
        await case_pb2_grpc.CaseServiceStub(ch).EraseCustomer(
            case_pb2.EraseCustomerRequest(customer_id=customer_id)
        )

    async def purged() -> bool:
        return await chat.store.get("demo", ana.contact_id) is None

    await eventually(purged, "the chat forgetting the erased customer's conversation")
    assert await chat.store.open_for_visitor("demo", "visitor-ana") is None
    kept = await chat.store.get("demo", bo.contact_id)
    assert kept is not None and kept.customer_name == "Bo Lee"
