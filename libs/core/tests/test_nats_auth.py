"""NATS users and permissions against a real nats-server configured from switchboard.core.nats_auth:
no anonymous client, no service publishing outside its permissions, every service able to do its
real work, TLS when configured, and JetStream's store unreadable without its key."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js import api as js_api
from nats.js.kv import KeyValue

from switchboard.core import events, nats_auth, revocation, stores, stream_erasure
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import NatsServer
from switchboard.core.errors import NotFound
from switchboard.core.settings import ServiceSettings
from switchboard.testing.contacts import chat_contact_created
from switchboard.testing.secured_nats import SecuredNats, assert_refused
from switchboard.testing.tls import self_signed
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2

# What a customer wrote; it must never be readable in the store's files.
SECRET_TEXT = "010-4321-8765 minsu.kim@example.kr 요금 청구서 문의"


class Client:
    """A connection as one user that records the permission violations the server reports."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None

    async def connect(self, server: SecuredNats, user: str) -> NATS:
        """Connect as `user`, once its service has declared the shared streams as it does."""
        bus = await Bus.connect(server.url, source=user, **server.options(user))
        await bus.drain()

        async def record(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(
            server.url,
            error_cb=record,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            **server.options(user),
        )
        return self.nc

    async def refused(self, action: Callable[[], Awaitable[Any]]) -> str:
        """Run `action`, which the server must refuse; the violation nats-py surfaced."""
        before = len(self.errors)
        try:
            await action()
            assert self.nc is not None
            await self.nc.flush()
        except nats.errors.TimeoutError:  # a refused request gets no reply
            pass
        for _ in range(100):
            if len(self.errors) > before:
                return self.errors[-1]
            await asyncio.sleep(0.02)
        raise AssertionError("the server did not refuse it")


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = Client()
    yield c
    if c.nc is not None and not c.nc.is_closed:
        await c.nc.close()


@pytest.fixture
def demo_only(tmp_path: Path) -> Any:
    """The embedded default's server for a deployment serving the tenant "demo" alone."""
    server = SecuredNats.start(tmp_path / "demo-only", tenants=["demo"])
    yield server
    server.server.stop()


async def test_an_anonymous_client_is_refused(secured_nats: SecuredNats) -> None:
    await assert_refused(secured_nats.url)
    await assert_refused(secured_nats.url, user="chat", password="not-the-password")


async def test_the_fax_service_cannot_forge_a_chat_contact(
    secured_nats: SecuredNats, client: Client
) -> None:
    nc = await client.connect(secured_nats, "fax")
    forged = chat_contact_created("forged-1", tenant="demo")
    js = nc.jetstream()

    async def publish() -> None:
        await js.publish("contact.demo.chat.created", forged.SerializeToString(), timeout=0.5)

    error = await client.refused(publish)
    assert 'permissions violation for publish to "contact.demo.chat.created"' in error.lower()
    admin = await Bus.connect(secured_nats.url, source="admin", **secured_nats.options("admin"))
    try:
        assert (await admin.js.stream_info("EVENTS")).state.messages == 0
    finally:
        await admin.drain()


async def test_no_service_publishes_for_a_tenant_the_deployment_does_not_serve(
    demo_only: SecuredNats, client: Client
) -> None:
    bus = await Bus.connect(demo_only.url, source="chat", **demo_only.options("chat"))
    try:
        await bus.publish(chat_contact_created("mine", tenant="demo"))
        with pytest.raises(nats.errors.TimeoutError):
            await bus.publish(chat_contact_created("theirs", tenant="globex"), timeout=0.5)
    finally:
        await bus.drain()
    assert any('"contact.globex.chat.created"' in v for v in demo_only.violations())


async def test_a_service_reads_no_events_but_through_its_own_consumers(
    secured_nats: SecuredNats, client: Client
) -> None:
    nc = await client.connect(secured_nats, "fax")

    async def tap() -> None:
        await nc.subscribe("contact.>")

    assert "subscription to" in (await client.refused(tap)).lower()

    async def take_the_case_services_consumer() -> None:
        config = js_api.ConsumerConfig(name="case", durable_name="case")
        await nc.jetstream().add_consumer("EVENTS", config, timeout=0.5)

    error = await client.refused(take_the_case_services_consumer)
    assert "$js.api.consumer.create.events.case" in error.lower()

    async def read_the_routers_state() -> None:
        await nc.jetstream().key_value("ROUTER")

    assert "$js.api.stream.info.kv_router" in (await client.refused(read_the_routers_state)).lower()


async def test_only_the_case_service_changes_the_shared_streams_configuration(
    secured_nats: SecuredNats, caplog: pytest.LogCaptureFixture
) -> None:
    admin = await Bus.connect(secured_nats.url, source="admin", **secured_nats.options("admin"))
    try:
        info = await admin.js.stream_info("EVENTS")
        declared = info.config.max_age
        await admin.js.update_stream(info.config.evolve(max_age=600.0))  # as a wiper would
        chat = await Bus.connect(secured_nats.url, source="chat", **secured_nats.options("chat"))
        await chat.drain()  # it connected, and left the stream alone
        assert (await admin.js.stream_info("EVENTS")).config.max_age == 600.0
        assert "could not update stream EVENTS" in caplog.text
        assert any('"$JS.API.STREAM.UPDATE.EVENTS"' in v for v in secured_nats.violations())
        case = await Bus.connect(secured_nats.url, source="case", **secured_nats.options("case"))
        await case.drain()
        assert (await admin.js.stream_info("EVENTS")).config.max_age == declared
    finally:
        await admin.drain()


async def test_the_case_service_erases_contacts_and_no_other_service_can(
    secured_nats: SecuredNats, client: Client
) -> None:
    chat = await Bus.connect(secured_nats.url, source="chat", **secured_nats.options("chat"))
    try:
        acks = [
            await chat.publish(chat_contact_created(cid, tenant="demo"))
            for cid in ("c-1", "c-2", "c-1")
        ]
        history = js_api.StreamConfig(name="CHAT_HISTORY", subjects=["chat.history.>"])
        await chat.js.add_stream(history)
        for cid in ("c-1", "c-2"):
            await chat.js.publish(f"chat.history.demo.{cid}", b'{"text": "hello"}')
    finally:
        await chat.drain()
    case = await Bus.connect(secured_nats.url, source="case", **secured_nats.options("case"))
    try:
        assert await stream_erasure.erase_contacts(case.js, "demo", ["c-1"]) == 3
        assert await stream_erasure.erase_contacts(case.js, "demo", ["c-1"]) == 0
        assert (await case.js.stream_info("EVENTS")).state.messages == 1
        assert (await case.js.stream_info("CHAT_HISTORY")).state.messages == 1
    finally:
        await case.drain()
    assert secured_nats.violations() == []

    nc = await client.connect(secured_nats, "chat")

    async def delete() -> None:
        await nc.jetstream().delete_msg("EVENTS", acks[1].seq)

    assert "$js.api.stream.msg.delete.events" in (await client.refused(delete)).lower()


@pytest.mark.parametrize(
    ("name", "durable", "bucket"),
    [
        ("chat", "chat", "chat_conversations"),
        ("email-ingest", "email-outbound-ack", "email_threads"),
        ("fax", "fax", "fax-jobs"),
        # The quarantine indexes (switchboard.core.quarantine), on durables of their own.
        ("email-ingest", "email-outbound-quarantine", "email_quarantine_index"),
        ("fax", "fax-quarantine", "fax_quarantine_index"),
    ],
)
async def test_each_channel_receives_customer_erased_and_purges_its_keys(
    secured_nats: SecuredNats, name: str, durable: str, bucket: str
) -> None:
    """The case service publishes CustomerErased; each channel keeping personal data in a
    key-value bucket receives it on its own durable, reads its bucket in one pass and purges."""
    channel = await Bus.connect(secured_nats.url, source=name, **secured_nats.options(name))
    case = await Bus.connect(secured_nats.url, source="case", **secured_nats.options("case"))
    received: asyncio.Future[case_events_pb2.CustomerErased] = asyncio.Future()

    async def on_erased(event: case_events_pb2.CustomerErased) -> None:
        received.set_result(event)

    try:
        kv = await stores.key_value(channel.js, bucket)
        await kv.put("k", b"personal data")
        channel.subscribe(durable, case_events_pb2.CustomerErased, on_erased)
        await channel.start()
        event = case_events_pb2.CustomerErased(
            meta=events.new_meta("demo", 0, "case"), customer_id="cust-1", contact_ids=["c-1"]
        )
        await case.publish(event)
        assert (await asyncio.wait_for(received, 10)).contact_ids == ["c-1"]
        assert [e.key async for e in stores.current(kv)] == ["k"]
        await kv.purge("k")
        assert [e.key async for e in stores.current(kv)] == []
    finally:
        await channel.drain()
        await case.drain()
    assert secured_nats.violations() == []


async def test_the_case_service_cannot_rewrite_another_services_consumer(
    secured_nats: SecuredNats, client: Client
) -> None:
    # nats-server takes an ephemeral create naming an existing consumer as an update of it, so
    # erasing reads without consumers and the case user may create none but its own.
    nc = await client.connect(secured_nats, "case")
    config = {"name": "router", "ack_policy": "explicit", "filter_subject": "contact.x.>"}
    request = json.dumps({"stream_name": "EVENTS", "config": config}).encode()

    async def rewrite() -> None:
        await nc.request("$JS.API.CONSUMER.CREATE.EVENTS", request, timeout=0.5)

    assert "$js.api.consumer.create.events" in (await client.refused(rewrite)).lower()


def _instance(subject: str) -> str:
    """A concrete subject a permission pattern allows (tenant "demo")."""
    tokens = subject.replace("{tenant}", "demo").split(".")
    return ".".join("chat" if t == "*" else "x" if t == ">" else t for t in tokens)


@pytest.mark.parametrize("name", sorted(nats_auth.SERVICES))
async def test_each_service_can_do_its_work(secured_nats: SecuredNats, name: str) -> None:
    grant = nats_auth.SERVICES[name]
    admin = await Bus.connect(secured_nats.url, source="admin", **secured_nats.options("admin"))
    bus = await Bus.connect(secured_nats.url, source=name, **secured_nats.options(name))
    try:
        # The revocation list every service opens at start (the chat writes its tenants').
        await stores.key_value(admin.js, revocation.BUCKET)
        for bucket in grant.reads_objects:  # another service's attachment
            await (await stores.object_store(admin.js, bucket)).put("shared", b"attachment")
        for bucket in grant.erases_objects:  # another service's object of an erased customer
            await (await stores.object_store(admin.js, bucket)).put("erased", b"personal data")
        for subject in grant.publishes:
            ack = await bus.js.publish(_instance(subject), b"event", timeout=5)
            assert ack.seq, subject
        for stream, durable in grant.consumers:
            filter_subject = nats_auth.events.STREAMS[stream][0]
            config = js_api.ConsumerConfig(
                name=durable, durable_name=durable, filter_subject=filter_subject
            )
            await bus.js.add_consumer(stream, config)
            sub = await bus.js.pull_subscribe_bind(durable=durable, stream=stream)
            await admin.js.publish(_instance(filter_subject), b"for " + durable.encode())
            [msg] = await sub.fetch(1, timeout=5)
            await msg.ack_sync()
            await bus.js.publish(nats_auth.deadletter.parked_subject(durable, msg.subject), b"x")
            await bus.js.consumer_info(stream, durable)
        owned = {
            stream: subjects for g in nats_auth.SERVICES.values() for stream, subjects in g.streams
        }
        for stream in grant.erases:
            filter_subject = (
                events.STREAMS[stream][0] if stream in events.STREAMS else owned[stream]
            )
            if stream not in events.STREAMS:  # another service's, created by it
                await admin.js.add_stream(
                    js_api.StreamConfig(name=stream, subjects=[filter_subject])
                )
            ack = await admin.js.publish(_instance(filter_subject), b"to erase", stream=stream)
            found = await bus.js.get_msg(stream, ack.seq, subject=filter_subject, next=True)
            assert found.data == b"to erase"
            assert await stream_erasure.secure_delete(bus.js, stream, ack.seq)
        for stream, subjects in grant.streams:
            await bus.js.add_stream(js_api.StreamConfig(name=stream, subjects=[subjects]))
            await bus.js.publish(_instance(subjects), b"entry")
            ordered = await bus.js.subscribe(_instance(subjects), ordered_consumer=True)
            assert (await ordered.next_msg(timeout=5)).data == b"entry"
            await ordered.unsubscribe()
        for bucket in grant.buckets:
            kv = await stores.key_value(bus.js, bucket, history=2)
            await kv.put("k", b"v")
            assert await stores.value(kv, "k") == b"v"
            # nats-py's keys() can answer before its watcher has seen a key just written
            await eventually(partial(_listed, kv, "k"), f"{bucket} listing its key", seconds=10)
            await kv.delete("k")
        for bucket in grant.objects:
            objects = await stores.object_store(bus.js, bucket)
            await objects.put("o", b"object")
            assert (await objects.get("o")).data == b"object"
            await objects.put("o", b"replaced")
            await objects.delete("o")
        reader = stores.ObjectStores(bus.js)
        for bucket in grant.reads_objects:
            assert await reader.get(bucket, "shared") == b"attachment"
        for bucket in grant.erases_objects:
            assert await reader.delete(bucket, "erased") is True
            assert await reader.delete(bucket, "erased") is False  # gone already
            with pytest.raises(NotFound):
                await stores.ObjectStores(admin.js).get(bucket, "erased")
        for subject in grant.core:
            received = await bus.nc.subscribe(_instance(subject))
            await bus.nc.publish(_instance(subject), b"emit")
            assert (await received.next_msg(timeout=5)).data == b"emit"
    finally:
        await bus.drain()
        await admin.drain()
    assert secured_nats.violations() == []


async def _listed(kv: KeyValue, key: str) -> bool:
    return await stores.keys(kv) == [key]


def _store_holds(store: Path, text: str) -> bool:
    needle = text.encode()
    return any(needle in p.read_bytes() for p in store.rglob("*") if p.is_file())


async def _publish_secret_and_stop(server: NatsServer, **options: Any) -> None:
    bus = await Bus.connect(server.url, source="chat", **options)
    event = chat_contact_created("c-1", tenant="demo")
    event.contact.customer_name = SECRET_TEXT
    await bus.publish(event)
    await bus.drain()
    server.stop()  # everything on disk


async def test_jetstream_data_is_encrypted_at_rest(
    secured_nats: SecuredNats, tmp_path: Path
) -> None:
    # The same event on a server without a key is readable in its files: the check can see it.
    plain = NatsServer(tmp_path / "plain").start()
    await _publish_secret_and_stop(plain)
    assert _store_holds(plain.store_dir, SECRET_TEXT)

    await _publish_secret_and_stop(secured_nats.server, **secured_nats.options("chat"))
    assert not _store_holds(secured_nats.server.store_dir, SECRET_TEXT)
    assert not _store_holds(secured_nats.server.store_dir, "c-1")


async def test_a_service_connects_over_tls_with_its_settings(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    tls = {"cert_file": str(cert), "key_file": str(key)}
    server = SecuredNats.start(tmp_path / "tls", tls=tls)
    try:
        settings = ServiceSettings(
            **server.env("chat"),  # type: ignore[arg-type]
            NATS_TLS_CA_FILE=str(cert),
        )
        bus = await Bus.connect(settings.nats_url, source="chat", **settings.nats_options())
        try:
            await bus.publish(chat_contact_created("over-tls", tenant="demo"))
        finally:
            await bus.drain()
        # The server requires TLS; a client that does not trust its certificate gets nothing.
        with pytest.raises(ssl.SSLCertVerificationError):
            await nats.connect(
                server.url,
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=2,
                **server.options("chat"),
            )
    finally:
        server.server.stop()


@pytest.mark.parametrize("name", sorted(nats_auth.SERVICES))
def test_the_documented_table_is_the_table_in_code(name: str) -> None:
    doc = Path(__file__).parents[3] / "docs" / "nats-security.md"
    [row] = [line for line in doc.read_text().splitlines() if line.startswith(f"| `{name}` |")]
    grant = nats_auth.SERVICES[name]
    named = [
        *grant.publishes,
        *(durable for _, durable in grant.consumers),
        *(stream for stream, _ in grant.streams),
        *grant.buckets,
        *grant.objects,
        *grant.reads_objects,
        *grant.erases_objects,
        *grant.core,
    ]
    # Numbered names (a durable per replica) are documented as a range: `x-0` … `x-15`.
    numbered: dict[str, list[int]] = {}
    for n in list(named):
        if (m := re.fullmatch(r"(.+)-(\d+)", n)) and m[1] in named:
            numbered.setdefault(m[1], []).append(int(m[2]))
            named.remove(n)
    for prefix, indexes in numbered.items():
        assert f"`{prefix}-0` … `{prefix}-{max(indexes)}`" in row, (prefix, row)
        assert sorted(indexes) == list(range(max(indexes) + 1))
    assert [n for n in named if f"`{n}`" not in row] == []
