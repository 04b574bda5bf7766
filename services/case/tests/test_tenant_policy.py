"""A tenant's policies changed at run time (the admin console's GetTenantPolicy and
ApplyTenantPolicy), on the running case service with a real nats-server and database: a
business-hours or holiday change moves a running SLA at once, on every replica; a part is
checked exactly as the file is, naming its line; a tenant sees and changes only its own part;
only an administrator changes it. And a part's YAML reads back as the same YAML."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
import yaml

from switchboard.case.bootstrap import CaseApp, bootstrap
from switchboard.case.settings import CaseSettings
from switchboard.case.sla import live, policy, tenant_policy
from switchboard.core import audit, auth
from switchboard.core import grpc as sb_grpc
from switchboard.testing.waiting import eventually
from switchboard.v1 import case_pb2, case_pb2_grpc, contact_pb2

SECRET = "tenant-policy-secret"
SEOUL = ZoneInfo("Asia/Seoul")
CREATED = datetime(2025, 3, 7, 17, 55, tzinfo=SEOUL)  # a Friday, 5 minutes before closing
LATER = datetime(2025, 3, 8, 12, 0, tzinfo=SEOUL)  # the Saturday after, at noon
POLICY = """
calendars:
  acme-office:
    timezone: Asia/Seoul
    hours: {mon-fri: "09:00-18:00"}
  shared:
    timezone: UTC
    hours: {mon-fri: "09:00-17:00"}
business_hours:
  acme: acme-office
  globex: shared
sla_policies:
  - {name: acme-standard, tenant: acme, calendar: acme-office, first_response: 4h}
  - {name: globex-standard, tenant: globex, calendar: shared, first_response: 4h}
  - {name: everyone, tenant: "*", calendar: shared, first_response: 8h}
templates:
  - {name: complaint, tenant: "*", subject: Complaint, case_type: complaint}
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now.astimezone(UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(CREATED)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def settings(nats_url: str, database_url: str, policy_file: Path) -> CaseSettings:
    return CaseSettings(  # type: ignore[call-arg]
        NATS_URL=nats_url,
        CASE_DATABASE_URL=database_url,
        CASE_GRPC_PORT=0,
        SWITCHBOARD_AUTH_SECRET=SECRET,
        SWITCHBOARD_TENANTS="acme,globex",
        CASE_POLICY_FILE=str(policy_file),
        SHUTDOWN_GRACE_SECONDS=0.5,
    )


@pytest.fixture
async def apps(
    nats_url: str, database_url: str, policy_file: Path, clock: Clock
) -> AsyncIterator[tuple[CaseApp, CaseApp]]:
    made = []
    try:
        for _ in range(2):
            app = bootstrap(
                settings(nats_url, database_url, policy_file), clock=clock, run_scheduler=False
            )
            await app.start()
            made.append(app)
        yield made[0], made[1]
    finally:
        for app in reversed(made):
            await app.stop()


class Caller:
    def __init__(self, app: CaseApp, tenant: str, role: str) -> None:
        self.target = f"127.0.0.1:{app.port}"
        self.token = auth.mint(SECRET, tenant, f"{role}-1", [role])

    async def __call__(self, method: str, request: Any) -> Any:
        async with sb_grpc.channel(self.target, self.token) as ch:
            return await getattr(case_pb2_grpc.CaseServiceStub(ch), method)(request, timeout=10)

    async def get(self) -> case_pb2.TenantPolicy:
        return await self("GetTenantPolicy", case_pb2.GetTenantPolicyRequest())

    async def apply(self, text: str, dry_run: bool = False, **kw: Any) -> case_pb2.TenantPolicy:
        request = case_pb2.ApplyTenantPolicyRequest(yaml=text, dry_run=dry_run, **kw)
        return await self("ApplyTenantPolicy", request)


async def first_response(call: Caller, case_id: str) -> timedelta:
    case = await call("GetCase", case_pb2.GetCaseRequest(case_id=case_id))
    timer = next(t for t in case.sla if t.metric == "first_response")
    assert timer.policy == "acme-standard"
    return timedelta(seconds=timer.elapsed.ToTimedelta().total_seconds())


async def test_business_hours_and_holidays_change_a_running_sla_at_once_everywhere(
    apps: tuple[CaseApp, CaseApp],
    clock: Clock,
    nats_url: str,
    database_url: str,
    policy_file: Path,
) -> None:
    admin, other = Caller(apps[0], "acme", "admin"), Caller(apps[1], "acme", "admin")
    agent = Caller(apps[1], "acme", "agent")
    created = await agent(
        "CreateCase",
        case_pb2.CreateCaseRequest(
            template="complaint",
            identities=[
                contact_pb2.CustomerIdentity(
                    kind=contact_pb2.IDENTITY_KIND_EMAIL, value="kim@example.com"
                )
            ],
        ),
    )
    clock.now = LATER
    # Friday 17:55-18:00 counts; the weekend does not.
    assert await first_response(agent, created.case_id) == timedelta(minutes=5)

    got = await admin.get()
    assert got.version == 0
    part = yaml.safe_load(got.yaml)
    assert part["business_hours"] == {"acme": "acme-office"}
    assert [p["name"] for p in part["sla_policies"]] == ["acme-standard"]
    assert "shared" not in part["calendars"]  # globex's too: not acme's to change

    # Saturdays are working days now: 09:00-12:00 on Saturday counts, on the other replica too.
    part["calendars"]["acme-office"]["hours"] = {"mon-sat": "09:00-18:00"}
    applied = await admin.apply(yaml.safe_dump(part), version=0)
    assert applied.version >= 1

    async def moved() -> timedelta | None:
        got = await first_response(agent, created.case_id)
        return got if got == timedelta(hours=3, minutes=5) else None

    assert await eventually(moved) == timedelta(hours=3, minutes=5)

    # Friday becomes a holiday: only Saturday morning counts.
    part["calendars"]["acme-office"]["holidays"] = ["2025-03-07"]
    applied = await other.apply(yaml.safe_dump(part), version=applied.version)

    # Applied on the agent's replica; the first replica takes it from the bucket's watch.
    async def holiday() -> timedelta | None:
        got = await first_response(agent, created.case_id)
        return got if got == timedelta(hours=3) else None

    assert await eventually(holiday) == timedelta(hours=3)
    on_the_first = Caller(apps[0], "acme", "agent")

    async def holiday_there() -> timedelta | None:
        if (await admin.get()).version != applied.version:
            return None
        got = await first_response(on_the_first, created.case_id)
        return got if got == timedelta(hours=3) else None

    assert await eventually(holiday_there) == timedelta(hours=3)

    # A service started afterwards has the change.
    third = bootstrap(
        settings(nats_url, database_url, policy_file), clock=clock, run_scheduler=False
    )
    await third.start()
    try:
        fresh = Caller(third, "acme", "agent")
        assert await first_response(fresh, created.case_id) == timedelta(hours=3)
    finally:
        await third.stop()


async def test_a_part_is_checked_like_the_file_and_names_its_line(
    apps: tuple[CaseApp, CaseApp],
) -> None:
    admin = Caller(apps[0], "acme", "admin")
    text = (await admin.get()).yaml

    async def refused(bad: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.apply(bad)
        assert err.value.code() == code
        return err.value.details() or ""

    bad = text.replace("calendar: acme-office", "calendar: nowhere")
    line = bad.splitlines().index(next(x for x in bad.splitlines() if "sla_policies" in x)) + 2
    assert await refused(bad) == (
        f"ApplyTenantPolicy:{line}: sla_policies[0]: unknown calendar 'nowhere'"
    )
    assert "first_response" in await refused(
        text.replace("first_response: 4h", "first_response: soon")
    )
    other = text.replace("tenant: acme", "tenant: globex")
    at = other.splitlines().index("  tenant: globex") + 1
    assert await refused(other) == f"ApplyTenantPolicy:{at}: sla_policies[0].tenant: must be acme"
    assert "calendars.shared: is another tenant's calendar" in await refused(
        text.replace("calendars:\n", "calendars:\n  shared: {timezone: UTC}\n")
    )
    assert "business_hours.globex: only acme's entry" in await refused(
        text.replace("business_hours:\n  acme: acme-office", "business_hours:\n  globex: shared")
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await admin.apply(text, version=7)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A check changes nothing.
    checked = await admin.apply(text.replace("4h", "2h"), dry_run=True)
    assert checked.version == 0 and (await admin.get()).yaml == text


async def test_a_tenant_sees_and_changes_only_its_own_part_and_only_an_admin_changes(
    apps: tuple[CaseApp, CaseApp],
) -> None:
    acme, globex = Caller(apps[0], "acme", "admin"), Caller(apps[0], "globex", "admin")
    part = yaml.safe_load((await globex.get()).yaml)
    assert "acme" not in str(part)
    assert part["sla_policies"] == [
        {
            "name": "globex-standard",
            "tenant": "globex",
            "calendar": "shared",
            "first_response": "4h",
        }
    ]
    part["sla_policies"][0]["first_response"] = "1h"
    await globex.apply(yaml.safe_dump(part))
    running = apps[0].policies
    assert running is not None
    targets = {p.name: p.targets["first_response"] for p in running.sla}
    assert targets["globex-standard"] == timedelta(hours=1)
    assert targets["acme-standard"] == timedelta(hours=4)
    assert (await acme.get()).version == 0 and "globex" not in (await acme.get()).yaml

    sup, agent = Caller(apps[0], "acme", "supervisor"), Caller(apps[0], "acme", "agent")
    assert (await sup.get()).yaml == (await acme.get()).yaml
    for who in (sup, agent):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await who.apply((await acme.get()).yaml)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await agent.get()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_export_of_a_loaded_part_is_the_same_yaml_and_a_policy_file() -> None:
    doc = live.file_document(None)  # the embedded demo's
    text = tenant_policy.dump(tenant_policy.section(doc, "demo"))
    part, made = tenant_policy.load(doc, "demo", text)
    assert tenant_policy.dump(part) == text
    assert made.business_calendar("demo") is not None
    # The part alone is a policy file, read as at start.
    alone = policy.parse(yaml.safe_load(text))
    assert {name for (_, name) in alone.templates} == {
        "billing-question",
        "monthly-inspection",
    }
    assert alone.business_calendar("demo") is not None
    assert [p.name for p in alone.sla] == ["demo-urgent", "demo-standard"]


async def test_a_stored_change_carries_who_made_it_and_what_changed_and_a_refused_one_nothing(
    apps: tuple[CaseApp, CaseApp],
) -> None:
    globex = Caller(apps[0], "globex", "admin")
    before = (await globex.get()).yaml
    changed = before.replace("first_response: 4h", "first_response: 1h")
    applied = await globex.apply(changed, version=0)
    kept = apps[0].live
    assert kept is not None
    stored = await kept.js.get_msg(f"KV_{live.BUCKET}", seq=applied.version)
    record = json.loads((stored.headers or {})[audit.HEADER])
    assert (record["actor"], record["action"], record["target"]) == (
        "admin-1",
        "policy.apply",
        "globex",
    )
    assert record["changes"]["diff"].splitlines()[-2:] == [
        "-  first_response: 4h",
        "+  first_response: 1h",
    ]
    # Refused (a stale version, a mistake, a check only): nothing more is stored.
    with pytest.raises(grpc.aio.AioRpcError):
        await globex.apply(changed, version=0)
    with pytest.raises(grpc.aio.AioRpcError):
        await globex.apply(changed.replace("1h", "soon"))
    await globex.apply(changed.replace("1h", "2h"), dry_run=True)
    state = await kept.js.stream_info(f"KV_{live.BUCKET}")
    assert state.state.last_seq == applied.version
