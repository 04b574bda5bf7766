"""Every stored change of the agents has exactly one audit record, even when the process stops
between storing it and publishing its record: the record is stored with the change, and the next
start (or the next look at the audit) publishes what is missing, once. A change that was refused
is never recorded. Real chat apps on a real nats-server."""

from __future__ import annotations

import time
from pathlib import Path

from switchboard.chat.admin.store import AUDIT_STREAM, POLICY_BUCKET, AdminStore, AuditRecord
from switchboard.chat.bootstrap import ChatApp
from switchboard.core import audit, stores
from switchboard.core.bus import Bus

from .test_admin import NEW_AGENT, Client, agents_file, start  # noqa: F401 (a fixture)


class Died(Exception):
    """The process stopping right after the change was stored."""


async def stored_records(nats_url: str, tenant: str = "demo") -> list[AuditRecord]:
    """The audit stream's records of `tenant` as they are, oldest first (nothing reconciled)."""
    bus = await Bus.connect(nats_url, source="test")
    try:
        store = await AdminStore.open(bus.js)
        return list(reversed(await store.audit(tenant)))
    finally:
        await bus.drain()


def die_before_publishing(app: ChatApp) -> None:
    assert app.admin is not None

    async def record(entry: AuditRecord) -> None:
        raise Died(entry.action)

    app.admin.store.record = record  # type: ignore[method-assign]


async def test_a_change_stored_without_its_record_is_recorded_once_at_the_next_start(
    nats_url: str,
    agents_file: Path,  # noqa: F811
) -> None:
    one = await start(nats_url, agents_file)
    two: ChatApp | None = None
    try:
        client = Client(one)
        boss = await client.token("boss")
        die_before_publishing(one)
        status, _ = await client.call("POST", "/api/admin/agents", NEW_AGENT, boss)
        assert status == 500  # the process "died" before answering ...
        assert (await client.login("ko-2", "hanul-pass-1"))[0] == 200  # ... with it stored
        assert await stored_records(nats_url) == []  # and no record published

        two = await start(nats_url, agents_file)  # the next process to start
        records = await stored_records(nats_url)
        assert [(r.actor, r.action, r.target) for r in records] == [("boss", "agent.add", "ko-2")]
        assert records[0].changes["languages"] == {"ko": 5, "en": 2}
        assert records[0].changes["password"] == "changed"  # never the hash
        assert (
            records[0].version
            == (await Client(two).call("GET", "/api/admin/agents", None, boss))[1]["version"]
        )

        # Looking at the audit, and starting again, publish nothing twice.
        status, body = await Client(two).call("GET", "/api/admin/audit", None, boss)
        assert status == 200 and [e["action"] for e in body["entries"]] == ["agent.add"]
        await two.stop()
        two = await start(nats_url, agents_file)
        assert len(await stored_records(nats_url)) == 1
    finally:
        if two is not None:
            await two.stop()
        await one.stop()


async def test_a_record_missing_is_published_when_the_audit_is_looked_at(
    nats_url: str,
    agents_file: Path,  # noqa: F811
) -> None:
    one = await start(nats_url, agents_file)
    try:
        client = Client(one)
        boss = await client.token("boss")
        real = one.admin.store.record  # type: ignore[union-attr]
        die_before_publishing(one)
        status, _ = await client.call("PUT", "/api/admin/agents/ko-1", {"name": "Kim"}, boss)
        assert status == 500
        one.admin.store.record = real  # type: ignore[union-attr,method-assign]
        status, body = await client.call("GET", "/api/admin/audit", None, boss)
        assert status == 200
        assert [(e["action"], e["changes"]) for e in body["entries"]] == [
            ("agent.edit", {"name": "Kim"})
        ]
        # A refused change (stale version) leaves neither a revision nor a record.
        version = (await client.call("GET", "/api/admin/agents", None, boss))[1]["version"]
        status, _ = await client.call(
            "PUT", "/api/admin/agents/ko-1", {"name": "Lee", "version": version - 1}, boss
        )
        assert status == 409
        assert len(await stored_records(nats_url)) == 1
        assert (await client.call("GET", "/api/admin/agents", None, boss))[1]["version"] == version
        # acme's audit is acme's: empty.
        acme = await client.token("acme-boss", tenant="acme")
        assert (await client.call("GET", "/api/admin/audit", None, acme))[1]["entries"] == []
    finally:
        await one.stop()


async def test_two_publications_of_one_record_are_kept_once(nats_url: str) -> None:
    bus = await Bus.connect(nats_url, source="test")
    try:
        store = await AdminStore.open(bus.js)
        entry = AuditRecord("demo", 1.0, "boss", "agent.add", "ko-9", 0, {"name": "x"})
        revision = await store.save_agents("demo", "agents: []\n", 0, entry)
        stored = AuditRecord("demo", 1.0, "boss", "agent.add", "ko-9", revision, {"name": "x"})
        await store.record(stored)  # the process that made the change ...
        assert await store.reconcile() == []  # ... and a reconciliation find it there
        await store.record(stored)  # a replica reconciling at the same moment
        assert (await bus.js.stream_info(AUDIT_STREAM)).state.messages == 1
    finally:
        await bus.drain()


async def test_a_policy_change_stored_with_its_record_is_published_once(nats_url: str) -> None:
    """The case service's policy bucket holds each change with its record: reconciling
    publishes the ones the audit stream lacks as ``policy.<tenant>.<revision>``, once; a value
    written without a record is left alone."""
    bus = await Bus.connect(nats_url, source="test")
    try:
        store = await AdminStore.open(bus.js)
        assert await store.reconcile() == []  # no policy bucket yet: nothing to do
        await stores.key_value(bus.js, POLICY_BUCKET, history=8)
        subject = f"$KV.{POLICY_BUCKET}.demo"
        at = time.time()
        record = audit.header("boss", "policy.apply", "demo", at, {"diff": "+  x: 1"})
        first = (await bus.js.publish(subject, b"x: 1\n", headers={audit.HEADER: record})).seq
        await bus.js.publish(subject, b"x: 2\n")  # by hand: no record
        published = await store.reconcile("demo")
        assert published == [
            AuditRecord("demo", at, "boss", "policy.apply", "demo", first, {"diff": "+  x: 1"})
        ]
        assert await store.reconcile() == []
        assert await store.publish_policy("demo", first) == published[0]  # again: kept once
        assert (await bus.js.stream_info(AUDIT_STREAM)).state.messages == 1
        raw = await bus.js.get_msg(AUDIT_STREAM, seq=1)
        assert (raw.headers or {})["Nats-Msg-Id"] == f"policy.demo.{first}"
    finally:
        await bus.drain()
