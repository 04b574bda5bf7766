"""`switchboard report` against the case service (started whole, as it runs) over real gRPC, a
real database and a real nats-server: CSV and a table, grouped by queue, and a wrong secret
refused."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from switchboard.case.bootstrap import CaseApp
from switchboard.case.devtools.report_sample import seed
from switchboard.cli.__main__ import parser
from switchboard.cli.endpoints import Endpoints
from switchboard.cli.report import run


def use_case_service(
    case_service: CaseApp, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """The CLI's endpoints file names the case service; its operator token is signed with the
    service's secret."""
    Endpoints(
        nats_url="nats://unused",
        grpc={"case": f"127.0.0.1:{case_service.grpc_port}"},
        tenant="acme",
    ).save(tmp_path / "endpoints.json")
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", secret)


async def test_switchboard_report_command(
    case_service: CaseApp,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    case_secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await seed(sessions)
    use_case_service(case_service, tmp_path, monkeypatch, case_secret)
    argv = ["report", "--kind", "service_level", "--interval", "hour", "--from", "2025-03-03",
            "--to", "2025-03-03T11:00:00+00:00"]  # fmt: skip
    assert await run(tmp_path, parser().parse_args([*argv, "--csv"])) == 0
    csv_out = capsys.readouterr().out.splitlines()
    assert csv_out[0].startswith("interval_start,interval_end,offered,answered")
    assert len(csv_out) == 1 + 11  # 00:00 .. 10:00
    assert csv_out[10].startswith("2025-03-03T09:00:00+00:00,2025-03-03T10:00:00+00:00,4,2,")
    assert await run(tmp_path, parser().parse_args([*argv, "--group-by", "queue"])) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["interval", "queue", "offered"]
    billing = next(line for line in table if line.startswith("2025-03-03 09:00  billing"))
    assert "33.3%" in billing  # billing: v1 in 10 s, v3 and v4 abandoned -> 1 of 3
    monkeypatch.setenv("SWITCHBOARD_AUTH_SECRET", "wrong-secret")
    assert await run(tmp_path, parser().parse_args(argv)) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().out


async def test_switchboard_report_prints_portal_deflection(
    case_service: CaseApp,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    case_secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from datetime import UTC, datetime

    from switchboard.case.reports.orm import SuggestionDraft

    at = datetime(2025, 3, 3, 9, 30, tzinfo=UTC)
    async with sessions.begin() as session:
        for draft_id, opened, sent in (("d-left-01", 2, None), ("d-sent-01", 1, at), ("d-none-01", 0, None)):  # fmt: skip
            session.add(
                SuggestionDraft(
                    tenant="acme",
                    draft_id=draft_id,
                    customer_id="c1",
                    shown_at=at,
                    opened=opened,
                    submitted_at=sent,
                )
            )
        # Another tenant's drafts are not in acme's report.
        session.add(SuggestionDraft(tenant="demo", draft_id="d-demo-01", customer_id="c2",
                                    shown_at=at, opened=1))  # fmt: skip
    use_case_service(case_service, tmp_path, monkeypatch, case_secret)
    argv = ["report", "--kind", "deflection", "--interval", "day", "--from", "2025-03-03",
            "--to", "2025-03-04"]  # fmt: skip
    assert await run(tmp_path, parser().parse_args(argv)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "interval",
        "suggestions_shown",
        "articles_opened",
        "deflected",
        "submitted_after_viewing",
        "deflection_rate",
    ]
    assert table[1].split() == ["2025-03-03", "00:00", "3", "3", "1", "1", "50.0%"]


async def test_switchboard_report_prints_agents_time_in_each_state(
    case_service: CaseApp,
    sessions: async_sessionmaker[AsyncSession],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    case_secret: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A supervisor's view of the morning: each agent's hours signed in, available, in wrap-up
    and on a break, as h:mm:ss, and the availability."""
    from datetime import UTC, datetime, timedelta

    from switchboard.case.reports.orm import AgentStateChange

    t0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    changes = [
        ("ko-1", "available", "", 0),
        ("ko-1", "break", "lunch", 30),
        ("ko-1", "available", "", 75),
        ("ko-1", "offline", "signed out", 120),
        ("zh-1", "available", "", 60),
    ]
    async with sessions.begin() as session:
        for n, (agent_id, presence, reason, minutes) in enumerate(changes):
            session.add(
                AgentStateChange(
                    event_id=f"state-{n}",
                    tenant="acme",
                    agent_id=agent_id,
                    presence=presence,
                    reason=reason,
                    changed_at=t0 + timedelta(minutes=minutes),
                )
            )
    use_case_service(case_service, tmp_path, monkeypatch, case_secret)
    argv = ["report", "--kind", "agent_states", "--interval", "day", "--group-by", "agent",
            "--from", "2025-03-03T09:00:00+00:00", "--to", "2025-03-03T12:00:00+00:00"]  # fmt: skip
    assert await run(tmp_path, parser().parse_args(argv)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "interval", "agent", "signed_in_s", "available_s", "busy_s", "wrap_up_s", "break_s",
        "not_responding_s", "breaks", "not_responding", "changed_by_others", "availability",
    ]  # fmt: skip
    assert table[1].split() == [
        "2025-03-03", "00:00", "ko-1", "2:00:00", "1:15:00", "0:00:00", "0:00:00", "0:45:00",
        "0:00:00", "1", "0", "0", "62.5%",
    ]  # fmt: skip
    # zh-1 still available: until the report's end, 12:00.
    assert table[2].split()[2:5] == ["zh-1", "2:00:00", "2:00:00"]
