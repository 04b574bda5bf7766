"""Several email-ingest replicas on the same mailboxes, against a real Dovecot and nats-server:
each mailbox is read by one replica at a time (the holder of its lease), the mailboxes are
spread over the replicas, and a replica killed with SIGKILL has its mailboxes taken over by the
survivor once its leases expire, with every mail published exactly once."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from switchboard.core import grpc as sb_grpc
from switchboard.core.auth import mint
from switchboard.core.bus import Bus
from switchboard.core.embedded_nats import free_port
from switchboard.email_ingest.devtools.dovecot import Dovecot
from switchboard.testing.processes import ServiceProcess
from switchboard.testing.streams import EventCollector, published
from switchboard.testing.waiting import eventually, until
from switchboard.v1 import email_pb2, email_pb2_grpc, events_pb2

from .conftest import BOXES, four_mailboxes, lease_holders

TTL = "2"


def _config(dovecot: Dovecot, path: Path) -> Path:
    path.write_text(yaml.safe_dump(four_mailboxes(dovecot)))
    return path


async def _statuses(process: ServiceProcess) -> dict[str, email_pb2.MailboxStatus]:
    token = mint(process.env["SWITCHBOARD_AUTH_SECRET"], "demo", "ops", ["admin"])
    async with sb_grpc.channel(process.target, token) as ch:
        response = await email_pb2_grpc.EmailServiceStub(ch).ListMailboxes(
            email_pb2.ListMailboxesRequest()
        )
    return {m.mailbox: m for m in response.mailboxes}


async def _ingested(process: ServiceProcess, total: int) -> dict[str, email_pb2.MailboxStatus]:
    """The replica's mailboxes once it has counted `total` mails ingested (the count follows
    the flagging)."""

    async def check() -> dict[str, email_pb2.MailboxStatus] | None:
        statuses = await _statuses(process)
        return statuses if sum(m.ingested for m in statuses.values()) >= total else None

    return await eventually(check, f"{process.target}: {total} mails ingested")


async def _held_metric(port: int) -> float:
    """switchboard_email_mailboxes_held as the replica's /metrics says it."""

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    for line in (await asyncio.to_thread(scrape)).splitlines():
        if line.startswith("switchboard_email_mailboxes_held "):
            return float(line.split()[1])
    raise AssertionError("no switchboard_email_mailboxes_held")


async def _deliver(dovecot: Dovecot, make_mail: Callable[..., bytes], round_: str, n: int) -> None:
    for box in BOXES:
        await dovecot.append(
            [
                make_mail(
                    f"{box} {round_} {i}",
                    f"Body {i}",
                    message_id=f"<{box}-{round_}-{i}@example.com>",
                )
                for i in range(n)
            ],
            user=box,
        )


async def _all_flagged(dovecot: Dovecot, uids: list[int]) -> None:
    """Wait until every mailbox has `uids` flagged as ingested (flagging follows publishing)."""
    for box in BOXES:

        async def flagged(box: str = box) -> bool:
            return await dovecot.uids(user=box, criteria="KEYWORD $Switchboard") == uids

        await eventually(flagged, f"{box}: {uids} flagged")


def _received(collector: EventCollector) -> Counter[tuple[str, str]]:
    return Counter((e.origin.mailbox, e.message_id) for e in collector.of(email_pb2.EmailReceived))


async def test_two_replicas_read_each_mailbox_once_and_the_survivor_takes_over_a_killed_ones(
    four_boxes: Dovecot,
    email_process: Callable[..., ServiceProcess],
    nats_url: str,
    bus: Bus,
    collector: EventCollector,
    make_mail: Callable[..., bytes],
    tmp_path: Path,
) -> None:
    config = _config(four_boxes, tmp_path / "mailboxes.yaml")
    env: dict[str, Any] = {"EMAIL_CONFIG_FILE": str(config), "EMAIL_LEASE_TTL_SECONDS": TTL}
    metrics_ports = {"replica-a": free_port(), "replica-b": free_port()}
    replicas = {
        name: email_process(
            nats_url,
            tmp_path / f"{name}.log",
            SWITCHBOARD_REPLICA_ID=name,
            METRICS_PORT=str(metrics_ports[name]),
            **env,
        )
        for name in ("replica-a", "replica-b")
    }
    await asyncio.gather(*(p.start() for p in replicas.values()))

    # The mailboxes are spread: each replica holds the leases of two of them, and reads just those.
    async def spread() -> dict[str, str] | None:
        holders = await lease_holders(bus)
        counts = sorted(Counter(holders.values()).items())
        return holders if counts == [("replica-a", 2), ("replica-b", 2)] else None

    holders = await eventually(spread, "the four mailboxes spread two and two")
    await _deliver(four_boxes, make_mail, "first", 3)
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) >= 12, "12 contacts")

    await _all_flagged(four_boxes, [1, 2, 3])
    for name, process in replicas.items():
        # A mailbox read elsewhere names its reader from the replica's next lease round on (a
        # hand-over in the first rounds may leave it "" until then).
        async def settled(
            process: ServiceProcess = process,
        ) -> dict[str, email_pb2.MailboxStatus] | None:
            statuses = await _ingested(process, 6)
            known = all(s.replica == holders.get(box) for box, s in statuses.items())
            return statuses if known else None

        statuses = await eventually(settled, f"{name}: every mailbox's reader named")
        assert sorted(statuses) == BOXES  # every mailbox is listed, read here or not
        for box, status in statuses.items():
            assert status.replica == holders[box]
            if holders[box] == name:
                assert status.state != email_pb2.MAILBOX_STATE_STANDBY
                assert status.ingested == 3 and status.healthy
            else:
                # Never read here: nothing ingested, and still healthy (readiness unaffected).
                assert status.state == email_pb2.MAILBOX_STATE_STANDBY
                assert status.ingested == 0 and status.last_uid == 0 and status.healthy
        # Ready, though it does not read half of the mailboxes.
        assert (
            await sb_grpc.check_health(process.target, service=process.health_service) == "SERVING"
        )
    assert await lease_holders(bus) == holders  # no lease changed hands meanwhile
    for name, port in metrics_ports.items():
        assert await _held_metric(port) == 2.0, name

    # One replica dies without a word: its leases stay until they expire, then the survivor
    # takes its mailboxes and reads the mail that arrived meanwhile.
    victim, survivor = "replica-a", "replica-b"
    replicas[victim].kill()
    killed_at = time.monotonic()
    await _deliver(four_boxes, make_mail, "second", 2)

    async def taken_over() -> bool:
        return await lease_holders(bus) == dict.fromkeys(BOXES, survivor)

    await eventually(taken_over, f"{survivor} holds every lease")
    took = time.monotonic() - killed_at
    print(f"the survivor held every lease {took:.2f}s after the kill (lease TTL {TTL}s)")
    await until(lambda: len(collector.of(events_pb2.ContactCreated)) >= 20, "20 contacts")

    await _all_flagged(four_boxes, [1, 2, 3, 4, 5])
    assert await lease_holders(bus) == dict.fromkeys(BOXES, survivor)
    statuses = await _ingested(replicas[survivor], 6 + 8)
    assert await _held_metric(metrics_ports[survivor]) == 4.0
    for box, status in statuses.items():
        assert status.state != email_pb2.MAILBOX_STATE_STANDBY and status.replica == survivor
        # The survivor went on from the victim's checkpoint: it published only the new mail.
        assert status.ingested == (5 if holders[box] == survivor else 2)
        assert status.last_uid == 5

    # Exactly once: every mail of every mailbox, once, in what was collected and in the stream.
    await asyncio.sleep(0.5)  # let any stray duplicate arrive before counting
    expected = {
        (box, f"{box}-{round_}-{i}@example.com")
        for box in BOXES
        for round_, n in (("first", 3), ("second", 2))
        for i in range(n)
    }
    received = _received(collector)
    assert set(received) == expected and set(received.values()) == {1}
    stored = await published(bus, "contact.demo.email.created", events_pb2.ContactCreated)
    ids = Counter(e.contact.contact_id for e in stored)
    assert len(ids) == 20 and set(ids.values()) == {1}
