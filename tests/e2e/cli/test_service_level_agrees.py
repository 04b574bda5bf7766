"""One service-level formula: the same contacts, fed to the router (whose live statistics feed
the wallboard) and recorded by the case service, give the same SL, SL2 and abandonment rate on
the wallboard and in `switchboard report` (the case service started whole, over real gRPC)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.adapters import keyring, orm
from switchboard.case.bootstrap import CaseApp
from switchboard.chat.inbox import wire
from switchboard.cli.__main__ import parser
from switchboard.cli.endpoints import Endpoints
from switchboard.cli.report import run
from switchboard.router.domain import config as cfg
from switchboard.router.domain import engine as eng
from switchboard.router.entrypoints.grpc_server import snapshot
from switchboard.router.handlers import ManualClock, Router
from switchboard.router.notifier import RoutingNotifier
from switchboard.v1 import case_pb2, contact_pb2

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
# (arrival offset s, outcome, seconds waited before it), one at a time: with T = S = 20 s, four
# answered (10 s and 20 s within T; 40 s and 25 s not), two abandoned (5 s: a short abandon; 60 s).
CONTACTS = [
    (0, "answered", 10),
    (30, "answered", 40),
    (100, "abandoned", 5),
    (120, "abandoned", 60),
    (200, "answered", 20),
    (240, "answered", 25),
]


class NoBus:
    """The router's publisher, unused: statistics are read, not published."""

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("nothing is published here")


def wallboard_figures() -> dict[str, float]:
    """The contacts through the routing engine, read as the wallboard reads them: the router's
    snapshot (WatchQueueStats) in the chat's wire form, plus SL2 from the same snapshot."""
    clock = ManualClock(T0.timestamp())
    engine = eng.Engine(clock, cfg.load_text("defaults: {sticky_ttl: 0s}\n", "t.yaml"))
    router = Router(engine, RoutingNotifier(NoBus()), wall=lambda: clock.now)  # type: ignore[arg-type]
    events = []
    for i, (offset, outcome, wait) in enumerate(CONTACTS):
        events.append((offset, "arrive", i))
        events.append((offset + wait, outcome, i))
    for at, what, i in sorted(events):
        clock.now = T0.timestamp() + at
        cid = f"c{i}"
        if what == "arrive":
            contact = contact_pb2.Contact(
                contact_id=cid, tenant="acme", channel=contact_pb2.CHANNEL_CHAT, language="ko"
            )
            assert not [e for e in engine.add_contact(contact) if isinstance(e, eng.Offered)]
        elif what == "abandoned":
            engine.withdraw_contact(cid, "abandoned")
        else:  # an agent (one chat at a time) signs in, is offered it and accepts it at once
            engine.sign_in(
                "acme", f"a{i}", f"a{i}", {"ko": 5}, {}, capacity={contact_pb2.CHANNEL_CHAT: 1}
            )
            [offered] = [
                e for e in engine.set_connected("acme", f"a{i}", True) if isinstance(e, eng.Offered)
            ]
            assert offered.contact.contact_id == cid
            engine.accept("acme", f"a{i}", offered.offer.offer_id)
    snap = snapshot(router, "acme", "")
    shown = wire.queue_stats(snap.total)
    assert [q.sl_threshold.seconds for q in snap.queues] == [20]  # the reports' default T
    assert shown["answered"] == 4 and shown["abandoned"] == 2
    return {
        "service_level": shown["service_level"],
        "service_level_2": snap.total.service_level_2,
        "abandon_rate": shown["abandonment_rate"],
    }


async def record(sessions: async_sessionmaker[AsyncSession]) -> None:
    """The same contacts as the case service records them (chat, tenant acme)."""
    async with sessions.begin() as s:
        keys = keyring.of(s)
        s.add(orm.Customer(id="k1", tenant="acme", display_name=keys.seal(s, "acme", "k1", "Ana"),
                           created_at=T0))  # fmt: skip
        await s.flush()
        s.add(orm.Case(id="case1", tenant="acme", customer_id="k1", reference="C-SLSLSL",
                       status=case_pb2.CASE_STATUS_IN_PROGRESS,
                       subject=keys.seal(s, "acme", "k1", "refund"), created_at=T0, updated_at=T0))  # fmt: skip
        await s.flush()
        for i, (offset, outcome, wait) in enumerate(CONTACTS):
            at = T0 + timedelta(seconds=offset)
            done = at + timedelta(seconds=wait)
            extra: dict[str, Any] = (
                {"abandoned_at": done}
                if outcome == "abandoned"
                else {"agent_id": f"a{i}", "assigned_at": done, "wait_ms": wait * 1000}
            )
            s.add(orm.Contact(contact_id=f"c{i}", tenant="acme", case_id="case1",
                              channel=contact_pb2.CHANNEL_CHAT, language="ko", skills=[],
                              queue="default", subject="", status="ended", created_at=at,
                              queued_at=at, **extra))  # fmt: skip


async def test_wallboard_and_report_give_the_same_service_level(
    case_service: CaseApp,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    case_secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    board = wallboard_figures()

    await record(sessions)
    Endpoints(
        nats_url="nats://unused",
        grpc={"case": f"127.0.0.1:{case_service.grpc_port}"},
        tenant="acme",
    ).save(tmp_path / "endpoints.json")
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", case_secret)
    argv = ["report", "--kind", "service_level", "--interval", "day", "--from", "2025-03-03",
            "--to", "2025-03-04", "--csv"]  # fmt: skip
    assert await run(tmp_path, parser().parse_args(argv)) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    report = {name: float(row[name]) for name in board}

    # By docs/kpi.md: SL = 2 within T / (4 answered + 2 abandoned); SL2 leaves out the one
    # abandon within S = T; the abandonment rate is 2 / 6.
    assert report == pytest.approx({"service_level": 2 / 6, "service_level_2": 2 / 5,
                                    "abandon_rate": 2 / 6}, abs=1e-4)  # fmt: skip
    # The CSV has four decimals; the wallboard the full figure.
    assert board == pytest.approx(report, abs=1e-4)
