"""Leases in JetStream key-value against a real nats-server: one holder at a time, renewal by
compare-and-set, fencing, expiry, release."""

from __future__ import annotations

from typing import Any

import nats.js.errors

from switchboard.core.bus import Bus
from switchboard.core.leases import Lease
from switchboard.testing.waiting import eventually


async def _lease(bus: Bus, replica: str, ttl: float = 30.0) -> Lease:
    lease = Lease(bus.js, "test_leases", "mailboxes.demo.support", replica, ttl)
    await lease.ensure()
    return lease


async def test_one_holder_at_a_time_and_a_renewal_fails_once_another_took_it(bus: Bus) -> None:
    a, b = await _lease(bus, "a"), await _lease(bus, "b")
    assert await a.try_acquire() and await a.holder() == "a"
    assert not await b.try_acquire()
    assert await a.renew() and await a.check()
    # b writes over a's revision (as it may once a's lease expired): a's renewal and fence fail.
    await b.kv.put(b.key, b"b")
    assert not await a.check()
    assert not await a.renew()
    assert await a.holder() == "b"


async def test_a_holder_takes_its_own_lease_back_under_a_new_revision(bus: Bus) -> None:
    a = await _lease(bus, "a")
    assert await a.try_acquire()
    first = a.revision
    again = await _lease(bus, "a")  # the same replica restarted under the same id
    assert await again.try_acquire() and again.revision > first
    assert not await a.renew()  # the previous term's renewals fail


async def test_a_lease_not_renewed_expires_and_another_replica_takes_it(bus: Bus) -> None:
    a, b = await _lease(bus, "a", ttl=1.0), await _lease(bus, "b", ttl=1.0)
    assert await a.try_acquire()
    await eventually(b.try_acquire, "b took the expired lease")
    assert await b.holder() == "b"
    assert not await a.check() and not await a.renew()


async def test_released_lease_is_free_at_once_and_a_release_never_frees_anothers(bus: Bus) -> None:
    a, b = await _lease(bus, "a"), await _lease(bus, "b")
    assert await a.try_acquire()
    await a.release()
    assert await a.holder() == "" and not a.fresh()
    assert await b.try_acquire()
    await a.release()  # no longer a's: left alone
    assert await b.holder() == "b" and await b.check()


async def test_a_renewal_landing_while_the_fence_reads_the_entry_does_not_fence_the_holder(
    bus: Bus,
) -> None:
    a = await _lease(bus, "a")
    assert await a.try_acquire()
    real = a.kv

    class RenewedDuringRead:
        """The bucket, with a's renewal landing between the read of the entry and its answer."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def get(self, key: str) -> Any:
            entry = await real.get(key)
            assert await a._write_after(a.revision)
            return entry

    a.kv = RenewedDuringRead()  # type: ignore[assignment]
    assert await a.check()
    a.kv = real
    assert await a.check() and await a.holder() == "a"


async def test_a_lease_expiring_while_it_is_created_over_is_taken_not_raised(bus: Bus) -> None:
    """The client's create finds the key, then reads it to see whether it is a delete marker;
    when the entry expires in between, the read finds nothing and the client raises 'key not
    found'. The lease is free then: it is taken, and no error escapes to the caller's loop."""
    a, b = await _lease(bus, "a"), await _lease(bus, "b")
    assert await a.try_acquire()
    create = b.kv.create
    calls = 0

    async def expiring_create(key: str, value: bytes, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await a.kv.purge(key)  # the entry expires under the create
            raise nats.js.errors.KeyNotFoundError
        return await create(key, value, **kwargs)

    b.kv.create = expiring_create  # type: ignore[method-assign]
    assert await b.try_acquire() and await b.holder() == "b"
    assert calls == 2
