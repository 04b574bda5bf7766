"""An erased customer's quarantined faxes (real nats-server, the real fax channel): a fax it could
not read is kept in quarantine, indexed by its sender's number (keyed, never in clear); when
CustomerErased names that number's sender key, the file, its reason, the document as received and
the index entry go; another customer's quarantined fax stays; delivered again, nothing more goes.
A fax whose sender is unknown is bounded by its tenant's retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from switchboard.core import events, sender_keys, stores
from switchboard.core.bus import Bus
from switchboard.core.settings import DEV_AUTH_SECRET
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.bootstrap import FaxApp
from switchboard.fax.intake import accept
from switchboard.fax.notifier import FaxNotifier
from switchboard.fax.settings import FaxSettings
from switchboard.testing.streams import stored_payloads
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_events_pb2, contact_pb2, fax_pb2

TENANT = "demo"
QUARANTINE_INDEX = "fax_quarantine_index"
ALICE, BOB = "+82 2 1234 5678", "+82 31 765 4321"
PHONE = contact_pb2.IDENTITY_KIND_PHONE


def key_of(e164: str, tenant: str = TENANT) -> str:
    return sender_keys.sender_key(sender_keys.secret_key(DEV_AUTH_SECRET), tenant, PHONE, e164)


def customer_erased(tenant: str, *senders: str) -> case_events_pb2.CustomerErased:
    return case_events_pb2.CustomerErased(
        meta=events.new_meta(tenant, 0, "case"), customer_id="cust-1", sender_keys=senders
    )


async def start_fax(nats_url: str, **extra: Any) -> FaxApp:
    settings: dict[str, Any] = {
        "NATS_URL": nats_url,
        "FAX_GRPC_PORT": 0,
        "FAX_HTTP_PORT": 0,
        "SHUTDOWN_GRACE_SECONDS": 1.0,
    }
    app = FaxApp(FaxSettings(**(settings | extra)))
    await app.start()
    return app


async def names(bus: Bus, bucket: str) -> set[str]:
    try:
        store = await bus.js.object_store(bucket)
        return {info.name for info in await store.list(ignore_deletes=True)}
    except Exception:  # no bucket, or nothing in it
        return set()


@pytest.mark.timeout(120)
async def test_erasing_a_customer_deletes_their_quarantined_faxes(
    nats_url: str, tmp_path: Path, bus: Bus
) -> None:
    app = await start_fax(nats_url, FAX_QUARANTINE_RETENTION_TENANTS="demo=7")
    try:
        objects, notifier = Objects(bus.js), FaxNotifier(bus)
        sent = {
            "alice": (TENANT, fax_pb2.FaxOrigin(caller_id_number=ALICE)),
            "bob": (TENANT, fax_pb2.FaxOrigin(caller_id_number=BOB)),
            "nobody": (TENANT, fax_pb2.FaxOrigin(caller_id_number="unknown")),
            "alice-at-acme": ("acme", fax_pb2.FaxOrigin(caller_id_number=ALICE)),
        }
        for who, (tenant, origin) in sent.items():
            data = b"%PDF-1.4 not really a fax from " + who.encode()
            await accept(objects, notifier, "fax-documents", tenant, f"fax-{who}", data, origin)

        async def all_quarantined() -> bool:
            kept = await names(bus, "fax-quarantine")
            return all(f"{t}/fax-{w}/reason.txt" in kept for w, (t, _) in sent.items())

        await eventually(all_quarantined)
        assert "demo/fax-alice/original.pdf" in await names(bus, "fax-documents")

        erased = customer_erased(TENANT, key_of("+82212345678"))
        counted = REGISTRY.get_sample_value(
            "switchboard_quarantine_deleted_total", {"channel": "fax", "reason": "erasure"}
        )
        await bus.publish(erased)

        def deleted() -> float:  # counted once the item's index keys are purged too
            labels = {"channel": "fax", "reason": "erasure"}
            return (
                REGISTRY.get_sample_value("switchboard_quarantine_deleted_total", labels) or 0
            ) - (counted or 0)

        async def alices_gone() -> bool:
            kept = await names(bus, "fax-quarantine")
            return not any("fax-alice/" in n for n in kept) and deleted() > 0

        await eventually(alices_gone)
        assert deleted() == 1
        # Nothing on the bus names her number any more (the fax as received and its quarantine
        # event are securely deleted); Bob's are still there.
        for stream in ("EVENTS", "DEADLETTER"):
            demo = [m for m in await stored_payloads(bus, stream) if b".demo." in m.split()[0]]
            assert not [m for m in demo if ALICE.encode() in m], stream
        stored = await stored_payloads(bus, "EVENTS")
        assert [m for m in stored if BOB.encode() in m]
        assert [m for m in stored if b".acme." in m.split()[0] and ALICE.encode() in m]
        # Hers is gone everywhere: the file, its reason, the document as received, the index.
        assert "demo/fax-alice/original.pdf" not in await names(bus, "fax-documents")
        index = await bus.js.key_value(QUARANTINE_INDEX)
        keys = set(await stores.keys(index))
        assert f"{key_of('+82212345678')}.fax-alice" not in keys
        assert [
            e.operation for e in await stores.history(index, f"{key_of('+82212345678')}.fax-alice")
        ] == ["PURGE"]
        # The others are indexed by their sender keys, the unknown sender's under "none".
        assert keys == {
            f"{key_of('+82317654321')}.fax-bob",
            f"{key_of('+82212345678', 'acme')}.fax-alice-at-acme",
            "none.fax-nobody",
        }
        # Bob's stay, the unknown sender's, and the same number's at another tenant.
        kept = await names(bus, "fax-quarantine")
        for who, tenant in (("bob", TENANT), ("nobody", TENANT), ("alice-at-acme", "acme")):
            assert {f"{tenant}/fax-{who}/original.pdf", f"{tenant}/fax-{who}/reason.txt"} <= kept
        assert "acme/fax-alice-at-acme/original.pdf" in await names(bus, "fax-documents")

        # Delivered again: nothing more goes.
        assert app.quarantine is not None
        await app.quarantine.on_customer_erased(erased)
        assert await app.quarantine.eraser.erase_senders(TENANT, [key_of("+82212345678")]) == 0
        assert await names(bus, "fax-quarantine") == kept

        # Retention: nothing is due yet; a week on, the demo tenant's (its sender unknown or
        # not) are deleted, and acme's, at the 30-day default, stay.
        assert await app.quarantine.eraser.sweep() == 0
        later = datetime.now(UTC) + timedelta(days=7, minutes=1)
        assert await app.quarantine.eraser.sweep(later) == 2
        assert await names(bus, "fax-quarantine") == {
            "acme/fax-alice-at-acme/original.pdf",
            "acme/fax-alice-at-acme/reason.txt",
        }
        assert set(await stores.keys(index)) == {
            f"{key_of('+82212345678', 'acme')}.fax-alice-at-acme"
        }
    finally:
        await app.stop()
