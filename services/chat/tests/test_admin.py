"""The admin console's agents over HTTP, on real chat apps and a real nats-server: changes apply
at once on every replica and survive a restart, are checked like the agents file, versioned and
audited; roles and tenants are enforced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.inbox import directory

from .conftest import chat_settings, config_for_tests

HASH = directory.hash_password("s3cret-pass")
AGENTS = f"""
tenants:
  demo:
    agents:
      - {{id: boss, name: Boss, role: admin, password: "{HASH}"}}
      - {{id: sup, name: Sup, role: supervisor, password: "{HASH}"}}
      - {{id: ko-1, name: 이수진, role: agent, ui_language: ko, password: "{HASH}",
         languages: {{ko: 5}}, skills: {{billing: 4}}}}
  acme:
    agents:
      - {{id: acme-boss, name: Acme Boss, role: admin, password: "{HASH}"}}
      - {{id: ko-1, name: Acme Kim, role: agent, password: "{HASH}"}}
"""


class Client:
    def __init__(self, app: ChatApp) -> None:
        self.base = f"http://127.0.0.1:{app.http_port}"

    async def login(self, agent_id: str, password: str = "s3cret-pass", tenant: str = "demo"):  # type: ignore[no-untyped-def]
        body = {"tenant": tenant, "agent_id": agent_id, "password": password}
        return await self.call("POST", "/api/agent/login", body)

    async def token(self, agent_id: str, tenant: str = "demo") -> str:
        status, body = await self.login(agent_id, tenant=tenant)
        assert status == 200, body
        return str(body["token"])

    async def call(
        self, method: str, path: str, body: Any = None, token: str = ""
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.base + path, json=body, headers=headers) as r:
                if r.content_type.startswith("application/json"):
                    return r.status, await r.json()
                return r.status, await r.text()


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    path = tmp_path / "agents.yaml"
    path.write_text(AGENTS, encoding="utf-8")
    return path


async def start(nats_url: str, agents_file: Path) -> ChatApp:
    app = ChatApp(
        chat_settings(nats_url, CHAT_AGENTS_FILE=str(agents_file)), config=config_for_tests()
    )
    await app.start()
    return app


@pytest.fixture
async def chat_pair(nats_url: str, agents_file: Path) -> AsyncIterator[tuple[ChatApp, ChatApp]]:
    first = await start(nats_url, agents_file)
    second = await start(nats_url, agents_file)
    try:
        yield first, second
    finally:
        await second.stop()
        await first.stop()


NEW_AGENT = {
    "id": "ko-2",
    "name": "김하늘",
    "password": "hanul-pass-1",
    "role": "agent",
    "ui_language": "ko",
    "languages": {"ko": 5, "en": 2},
    "skills": {"billing": 3, "technical": 2},
    "capacity": {"chat": 2, "email": 4},
}


async def wait_for_login(client: Client, agent_id: str, password: str, expect: int) -> None:
    """The other replica follows the bucket: wait (boundedly) for it to have the change."""

    status = 0
    for _ in range(100):
        status, _ = await client.login(agent_id, password)
        if status == expect:
            return
        await asyncio.sleep(0.1)
    assert status == expect


async def test_an_added_agent_signs_in_on_every_replica_and_after_a_restart(
    chat_pair: tuple[ChatApp, ChatApp], nats_url: str, agents_file: Path
) -> None:
    one, two = Client(chat_pair[0]), Client(chat_pair[1])
    boss = await one.token("boss")
    assert (await one.login("ko-2", "hanul-pass-1"))[0] == 401  # not there yet
    status, body = await one.call("POST", "/api/admin/agents", NEW_AGENT, boss)
    assert status == 200, body
    assert body["version"] >= 1
    added = next(a for a in body["agents"] if a["agent_id"] == "ko-2")
    assert added["languages"] == {"ko": 5, "en": 2} and added["capacity"] == {"chat": 2, "email": 4}
    assert "password" not in added
    status, signed = await one.login("ko-2", "hanul-pass-1")
    assert status == 200 and signed["agent"]["skills"] == {"billing": 3, "technical": 2}
    await wait_for_login(two, "ko-2", "hanul-pass-1", 200)  # the other replica, no restart

    # The file's agents are still there, and the change outlives the replicas.
    assert (await two.login("ko-1"))[0] == 200
    await chat_pair[1].stop()
    restarted = await start(nats_url, agents_file)
    try:
        again = Client(restarted)
        assert (await again.login("ko-2", "hanul-pass-1"))[0] == 200
    finally:
        await restarted.stop()


async def test_edit_reset_password_disable_and_audit(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    one, two = Client(chat_pair[0]), Client(chat_pair[1])
    boss = await one.token("boss")
    status, body = await one.call("GET", "/api/admin/agents", token=boss)
    version = body["version"]
    status, body = await one.call(
        "PUT",
        "/api/admin/agents/ko-1",
        {"skills": {"billing": 5, "account": 2}, "version": version},
        boss,
    )
    assert status == 200, body
    ko = next(a for a in body["agents"] if a["agent_id"] == "ko-1")
    assert ko["skills"] == {"billing": 5, "account": 2} and ko["name"] == "이수진"
    # Someone working from the old version is told, and changes nothing.
    status, stale = await one.call(
        "PUT", "/api/admin/agents/ko-1", {"name": "X", "version": version}, boss
    )
    assert status == 409 and "changed meanwhile" in stale["error"]

    status, _ = await one.call(
        "POST", "/api/admin/agents/ko-1/password", {"password": "new-pass-99"}, boss
    )
    assert status == 200
    assert (await one.login("ko-1"))[0] == 401
    assert (await one.login("ko-1", "new-pass-99"))[0] == 200
    await wait_for_login(two, "ko-1", "new-pass-99", 200)

    status, body = await one.call("PUT", "/api/admin/agents/ko-1", {"disabled": True}, boss)
    assert status == 200 and next(a for a in body["agents"] if a["agent_id"] == "ko-1")["disabled"]
    assert (await one.login("ko-1", "new-pass-99"))[0] == 401
    await wait_for_login(two, "ko-1", "new-pass-99", 401)

    status, audit = await one.call("GET", "/api/admin/audit", token=boss)
    assert status == 200
    actions = [(e["actor"], e["action"], e["target"]) for e in audit["entries"]]
    assert actions == [
        ("boss", "agent.disable", "ko-1"),
        ("boss", "agent.password", "ko-1"),
        ("boss", "agent.edit", "ko-1"),
    ]
    assert audit["entries"][2]["changes"] == {"skills": {"billing": 5, "account": 2}}
    assert audit["entries"][1]["changes"] == {"password": "changed"}
    versions = [e["version"] for e in audit["entries"]]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == 3
    assert "scrypt$" not in str(audit)


async def test_changes_are_checked_like_the_agents_file(chat_pair: tuple[ChatApp, ChatApp]) -> None:
    one = Client(chat_pair[0])
    boss = await one.token("boss")

    async def add(**fields: Any) -> tuple[int, Any]:
        return await one.call("POST", "/api/admin/agents", {**NEW_AGENT, **fields}, boss)

    status, body = await add(languages={"ko": 7})
    assert status == 400
    assert body["error"] == "tenants.demo.agents[3].languages.ko: must be an integer from 1 to 5"
    status, body = await add(role="owner")
    assert status == 400
    assert body["error"] == (
        "tenants.demo.agents[3].role: must be one of agent, team_lead, supervisor, qa, admin"
    )
    status, body = await add(capacity={"voice": 2})
    assert body["error"] == "tenants.demo.agents[3].capacity.voice: must be an integer from 0 to 1"
    status, body = await add(capacity={"pigeon": 1})
    assert status == 400 and "capacity.pigeon: unknown field" in body["error"]
    status, body = await add(id="bad id!")
    assert status == 400 and body["error"].startswith("id:")
    status, body = await add(password="short")
    assert status == 400 and body["error"].startswith("password:")
    status, body = await add(id="ko-1")
    assert status == 409 and "already exists" in body["error"]
    # Nothing of these was stored.
    status, body = await one.call("GET", "/api/admin/agents", token=boss)
    assert [a["agent_id"] for a in body["agents"]] == ["boss", "ko-1", "sup"]
    assert body["version"] == 0


async def test_roles_supervisor_views_agent_may_not(chat_pair: tuple[ChatApp, ChatApp]) -> None:
    one = Client(chat_pair[0])
    sup, agent = await one.token("sup"), await one.token("ko-1")
    status, body = await one.call("GET", "/api/admin/agents", token=sup)
    assert status == 200 and body["may_change"] is False
    assert (await one.call("GET", "/api/admin/agents.yaml", token=sup))[0] == 200
    assert (await one.call("GET", "/api/admin/audit", token=sup))[0] == 200
    for method, path, payload in (
        ("POST", "/api/admin/agents", NEW_AGENT),
        ("PUT", "/api/admin/agents/ko-1", {"name": "x"}),
        ("POST", "/api/admin/agents/ko-1/password", {"password": "whatever-1"}),
    ):
        assert (await one.call(method, path, payload, sup))[0] == 403
        assert (await one.call(method, path, payload, agent))[0] == 403
    assert (await one.call("GET", "/api/admin/agents", token=agent))[0] == 403
    assert (await one.call("GET", "/api/admin/agents"))[0] == 401


async def test_an_admin_sees_and_changes_only_its_own_tenant(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    one = Client(chat_pair[0])
    acme = await one.token("acme-boss", tenant="acme")
    status, body = await one.call("GET", "/api/admin/agents", token=acme)
    assert body["tenant"] == "acme"
    assert [(a["agent_id"], a["name"]) for a in body["agents"]] == [
        ("acme-boss", "Acme Boss"),
        ("ko-1", "Acme Kim"),
    ]
    status, _ = await one.call("PUT", "/api/admin/agents/boss", {"role": "agent"}, acme)
    assert status == 404  # demo's admin is not acme's to find
    # Changing acme's ko-1 leaves demo's ko-1 alone.
    status, _ = await one.call(
        "POST", "/api/admin/agents/ko-1/password", {"password": "acme-pass-1"}, acme
    )
    assert status == 200
    assert (await one.login("ko-1", "acme-pass-1", tenant="acme"))[0] == 200
    assert (await one.login("ko-1"))[0] == 200  # demo's, with its own password
    exported = (await one.call("GET", "/api/admin/agents.yaml", token=acme))[1]
    assert "acme-boss" in exported and "이수진" not in exported and "demo" not in exported
    demo = await one.token("boss")
    status, audit = await one.call("GET", "/api/admin/audit", token=demo)
    assert audit["entries"] == []  # acme's change is acme's


async def test_export_is_the_agents_file_and_reads_back_the_same(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    one = Client(chat_pair[0])
    boss = await one.token("boss")
    await one.call("POST", "/api/admin/agents", NEW_AGENT, boss)
    status, text = await one.call("GET", "/api/admin/agents.yaml", token=boss)
    assert status == 200
    exported = directory.load_text(text)
    live = chat_pair[0].inbox.directory.tenant("demo")  # type: ignore[union-attr]
    assert exported == live
    assert exported.profile("demo", "ko-2").capacity == {"chat": 2, "email": 4}  # type: ignore[union-attr]
    assert directory.check_password("hanul-pass-1", exported.profile("demo", "ko-2").password)  # type: ignore[union-attr]


async def test_wrap_up_codes_change_at_once_checked_audited_own_tenant_and_exported(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    one, two = Client(chat_pair[0]), Client(chat_pair[1])
    boss, sup, acme = (
        await one.token("boss"),
        await one.token("sup"),
        await one.token("acme-boss", tenant="acme"),
    )
    codes = ["resolved", "follow_up", "callback_promised"]
    # Checked like the file's wrap_up_codes, naming the entry; nothing stored.
    status, body = await one.call(
        "PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": ["resolved", "Bad Code"]}, boss
    )
    assert status == 400
    assert body["error"].startswith("tenants.demo.wrap_up_codes[1]:")
    status, body = await one.call(
        "PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": ["resolved", "resolved"]}, boss
    )
    assert body["error"] == "tenants.demo.wrap_up_codes[1]: 'resolved' repeated"
    status, body = await one.call("PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": []}, boss)
    assert status == 400 and body["error"].startswith("tenants.demo.wrap_up_codes:")
    # Supervisors and agents may not; an old version is refused.
    assert (await one.call("PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": codes}, sup))[
        0
    ] == 403
    status, body = await one.call(
        "PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": codes, "version": 5}, boss
    )
    assert status == 409

    status, body = await one.call(
        "PUT", "/api/admin/wrap-up-codes", {"wrap_up_codes": codes, "version": 0}, boss
    )
    assert status == 200, body
    assert body["wrap_up_codes"] == codes and body["version"] >= 1
    # The inbox's desk takes them at its next sign-in, on the other replica too, no restart.

    other = chat_pair[1].inbox
    assert other is not None
    for _ in range(100):
        if other.directory.codes("demo") == tuple(codes):
            break
        await asyncio.sleep(0.1)
    assert other.directory.codes("demo") == tuple(codes)
    assert (await two.login("ko-1"))[0] == 200  # the agents are kept
    # acme keeps its own codes, and cannot see demo's.
    status, body = await one.call("GET", "/api/admin/agents", token=acme)
    assert "callback_promised" not in body["wrap_up_codes"]
    assert "callback_promised" not in other.directory.codes("acme")
    # Audited; exported in the agents file, which reads back as the same directory.
    _, audit = await one.call("GET", "/api/admin/audit", token=boss)
    entry = audit["entries"][0]
    assert (entry["action"], entry["target"], entry["actor"]) == ("codes.set", "demo", "boss")
    assert entry["changes"]["wrap_up_codes"] == codes
    _, text = await one.call("GET", "/api/admin/agents.yaml", token=boss)
    assert directory.load_text(text).codes("demo") == tuple(codes)
    assert directory.dump(directory.load_text(text), ["demo"]) == text


STATIC = Path(directory.__file__).resolve().parents[1] / "static"


def test_the_console_speaks_korean_chinese_english_and_japanese() -> None:
    import json
    import re

    strings = {
        lang: json.loads((STATIC / "i18n" / "admin" / f"{lang}.json").read_text("utf-8"))
        for lang in ("ko", "zh", "en", "ja")
    }
    for lang, table in strings.items():
        assert set(table) == set(strings["en"]), lang
        assert all(isinstance(v, str) and v for v in table.values()), lang
    html = (STATIC / "admin.html").read_text("utf-8")
    script = (STATIC / "admin.js").read_text("utf-8")
    used = set(re.findall(r'data-i18n="([A-Za-z_]+)"', html))
    used |= set(re.findall(r'\bt\("([A-Za-z]+(?:_[A-Za-z]+)*)"', script))
    # Keys made from the server's words: roles, audit actions, exclusion reasons.
    used |= {f"role_{r}" for r in directory.ROLES}
    used |= {f"act_agent_{a}" for a in ("add", "edit", "password", "disable", "enable")}
    used |= {"act_routing_apply", "act_codes_set", "act_policy_apply"}
    used |= {"act_oidc_set", "act_oidc_remove"}
    used |= {f"oidc_{r}" for r in ("unavailable", "expired", "refused", "unknown", "disabled")}
    from switchboard.chat.admin.console import REASONS

    used |= {f"why_{r}" for r in REASONS.values()} | {"why_other"}
    assert used - set(strings["en"]) == set()
    assert 'data-i18n-langs="ko zh en ja"' in html


async def test_the_console_page_is_served_with_the_inbox_policy(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{chat_pair[0].http_port}/admin") as r:
            assert r.status == 200
            assert 'src="static/admin.js"' in await r.text()
            assert "script-src 'self'" in r.headers["content-security-policy"]
        async with http.put(
            f"http://127.0.0.1:{chat_pair[0].http_port}/api/admin/agents/ko-1",
            json={"name": "x"},
            headers={"Origin": "https://evil.example.com"},
        ) as r:
            assert r.status == 403  # changes only from the console's own origin


async def test_teams_are_set_by_admins_seen_by_supervisors_audited_and_kept_per_tenant(
    chat_pair: tuple[ChatApp, ChatApp],
) -> None:
    one, two = Client(chat_pair[0]), Client(chat_pair[1])
    boss, sup, agent = await one.token("boss"), await one.token("sup"), await one.token("ko-1")
    teams = [{"id": "ko-team", "name": "한국어 팀", "leads": ["sup"]}]
    for token in (sup, agent):  # a supervisor views, only an admin changes
        assert (await one.call("PUT", "/api/admin/teams", {"teams": teams}, token))[0] == 403
    assert (await one.call("PUT", "/api/admin/teams", {"teams": teams}))[0] == 401
    status, body = await one.call("PUT", "/api/admin/teams", {"teams": teams, "version": 0}, boss)
    assert status == 200, body
    assert body["teams"] == teams and body["version"] == 1
    status, body = await one.call("PUT", "/api/admin/agents/ko-1", {"team": "ko-team"}, boss)
    assert status == 200 and {a["agent_id"]: a["team"] for a in body["agents"]}["ko-1"] == "ko-team"
    # Checked as the file is: a lead not of the tenant, an unknown team, a stale version.
    status, body = await one.call(
        "PUT", "/api/admin/teams", {"teams": [{"id": "x", "name": "X", "leads": ["ghost"]}]}, boss
    )
    assert (
        status == 400 and "tenants.demo.teams[0].leads[0]: ghost is not an agent" in body["error"]
    )
    status, body = await one.call("PUT", "/api/admin/agents/sup", {"team": "nope"}, boss)
    assert status == 400 and "unknown team 'nope'" in body["error"]
    stale = {"teams": [], "version": 1}
    assert (await one.call("PUT", "/api/admin/teams", stale, boss))[0] == 409
    # The supervisor sees them, on the other replica too; the export has them.
    for _ in range(100):
        status, body = await two.call("GET", "/api/admin/agents", token=sup)
        if body.get("teams"):
            break
        await asyncio.sleep(0.1)
    assert status == 200 and body["teams"] == teams and body["may_change"] is False
    exported = (await one.call("GET", "/api/admin/agents.yaml", token=sup))[1]
    assert directory.load_text(exported) == chat_pair[0].inbox.directory.tenant("demo")  # type: ignore[union-attr]
    assert directory.load_text(exported).team_map("demo") == {"ko-1": "ko-team"}
    audit = (await one.call("GET", "/api/admin/audit", token=sup))[1]["entries"]
    # One record per stored change, however often the log is read (no late duplicates).
    audit = (await two.call("GET", "/api/admin/audit", token=sup))[1]["entries"]
    assert [(e["version"], e["action"]) for e in audit] == [(2, "agent.edit"), (1, "teams.set")]
    by_version = {e["version"]: e for e in audit}
    assert [by_version[v]["action"] for v in (1, 2)] == ["teams.set", "agent.edit"], audit
    assert by_version[1]["changes"]["teams"] == teams and by_version[1]["actor"] == "boss"
    # Another tenant's admin sees none of them and may not lead with demo's agents.
    acme = await one.token("acme-boss", tenant="acme")
    body = (await one.call("GET", "/api/admin/agents", token=acme))[1]
    assert body["teams"] == [] and all(a["team"] == "" for a in body["agents"])
    status, body = await one.call("PUT", "/api/admin/teams", {"teams": teams}, acme)
    assert status == 400 and "sup is not an agent of acme" in body["error"]
    status, _ = await one.call("PUT", "/api/admin/agents/ko-1", {"team": "ko-team"}, acme)
    assert status == 400  # demo's team is not acme's
    assert "ko-team" not in (await one.call("GET", "/api/admin/agents.yaml", token=acme))[1]
