"""The replicas' question over a real nats-server: which one holds an agent's call."""

from __future__ import annotations

import json

import nats

from switchboard.testing.waiting import subscriptions_active
from switchboard.voice_gateway.adapters.replicas import SUBJECT, NatsReplicas
from switchboard.voice_gateway.domain.supervision import SipAddress

HOLDER = SipAddress("10.0.0.8", 5060, 5061)


async def test_only_the_replica_holding_the_call_answers_and_silence_is_none(nats_url: str) -> None:
    connections = [await nats.connect(nats_url) for _ in range(3)]
    try:
        asking, holding, other = (NatsReplicas(nc, timeout=0.5) for nc in connections)
        await holding.answer(lambda t, a: HOLDER if (t, a) == ("demo", "a1") else None)
        await other.answer(lambda t, a: None)
        await asking.answer(lambda t, a: None)
        for nc in connections:
            await subscriptions_active(nc)

        assert await asking.find("demo", "a1") == HOLDER
        # Another tenant's agent of the same id, and an agent on no call: nobody answers.
        assert await asking.find("acme", "a1") is None
        assert await asking.find("demo", "nobody") is None
    finally:
        for nc in connections:
            await nc.close()


async def test_a_replica_answers_only_on_the_replicas_answer_subjects(nats_url: str) -> None:
    """A question naming some other reply subject gets no answer there (a replica never
    publishes where a question tells it to), and a malformed question none at all."""
    holder_nc, probe = await nats.connect(nats_url), await nats.connect(nats_url)
    try:
        await NatsReplicas(holder_nc, timeout=0.5).answer(lambda t, a: HOLDER)
        await subscriptions_active(holder_nc)
        elsewhere = await probe.subscribe("switchboard.voice.elsewhere")
        question = json.dumps({"tenant": "demo", "agent_id": "a1"}).encode()
        await probe.publish(SUBJECT, question, reply="switchboard.voice.elsewhere")
        await probe.publish(SUBJECT, b"not json", reply="switchboard.voice.agent_call_answer.x")
        # A proper question afterwards is answered: the two before it were read and dropped.
        assert await NatsReplicas(probe, timeout=5).find("demo", "a1") == HOLDER
        assert elsewhere.pending_msgs == 0
    finally:
        await holder_nc.close()
        await probe.close()
