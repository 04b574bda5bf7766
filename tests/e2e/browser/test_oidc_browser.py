"""End to end in chromium: an agent of a tenant whose company has a directory signs in to the inbox
with "Sign in with <company>" through a real OIDC provider (Authorization Code with PKCE), gets
its desk and a Korean chat; a directory user who is no agent is told so in the page's language."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import expect

from switchboard.chat.inbox import directory
from switchboard.testing.oidc import OidcProvider

from ..conftest import running_platform
from .conftest import SECRET
from .test_inbox_browser import sign_in, start_chat

CLIENT = "switchboard-demo"


@pytest.fixture
async def company(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Any, OidcProvider]]:
    user = {"sub": "7f3a", "preferred_username": "ko-1", "name": "이수진"}
    with OidcProvider({CLIENT: ("company-secret", [])}, user) as provider:
        secret = tmp_path / "oidc-client-secret"
        secret.write_text("company-secret\n", encoding="utf-8")
        agents = yaml.safe_load(directory.DEFAULT_FILE.read_text(encoding="utf-8"))
        agents["tenants"]["demo"]["oidc"] = {
            "name": "Demo Corp",
            "issuer": provider.issuer,
            "client_id": CLIENT,
            "client_secret_file": str(secret),
        }
        path = tmp_path / "agents.yaml"
        path.write_text(yaml.safe_dump(agents, allow_unicode=True), encoding="utf-8")
        async with running_platform(
            nats_url, database_url, SECRET, chat_settings={"CHAT_AGENTS_FILE": str(path)}
        ) as made:
            # Only the platform's own callback is registered with the provider.
            provider.clients[CLIENT] = (
                "company-secret",
                [f"{made.chat_url}/api/agent/oidc/callback"],
            )
            yield made, provider


async def test_an_agent_signs_in_with_the_company_directory_and_gets_its_desk(
    company: tuple[Any, OidcProvider], pages: Any
) -> None:
    platform, provider = company
    inbox = await pages.new(f"{platform.chat_url}/inbox?tenant=demo")
    button = inbox.get_by_test_id("login-oidc")
    await expect(button).to_have_text("Demo Corp 계정으로 로그인")
    await pages.shot(inbox, "inbox-login-oidc")
    await button.click()

    # Through the provider and back: the desk, in the agent's language, with no password typed.
    await expect(inbox.get_by_test_id("me")).to_contain_text("이수진")
    await expect(inbox.locator("html")).to_have_attribute("lang", "ko")
    presence = inbox.get_by_test_id("presence")
    await expect(presence).to_have_attribute("data-presence", "available")
    assert "#" not in inbox.url and "oidc" not in inbox.url
    assert provider.issued and provider.issued[-1]["aud"] == CLIENT

    # The desk works: a Korean chat is offered to this agent.
    customer = await pages.new(f"{platform.chat_url}/?tenant=demo")
    await start_chat(customer, "김민지", "요금이 두 번 청구되었어요")
    offer = inbox.get_by_test_id("offer")
    await expect(offer).to_have_attribute("data-channel", "chat")
    await pages.shot(inbox, "inbox-oidc-desk")

    # Someone of the company's directory who is no agent of the tenant is told so, in Korean.
    provider.user = {"sub": "9c1b", "preferred_username": "visitor"}
    stranger = await pages.new(f"{platform.chat_url}/inbox?tenant=demo")
    await stranger.get_by_test_id("login-oidc").click()
    error = stranger.get_by_test_id("login-error")
    await expect(error).to_have_text(
        "이 회사 계정은 이 테넌트의 상담원으로 등록되어 있지 않습니다. 관리자에게 등록을 요청하세요."
    )
    await expect(stranger.get_by_test_id("login")).to_be_visible()
    assert not pages.errors, pages.errors


async def test_an_admin_turns_the_company_sign_in_on_in_the_console(
    company: tuple[Any, OidcProvider], pages: Any, tmp_path: Path
) -> None:
    platform, provider = company
    admin = await pages.new(f"{platform.chat_url}/admin")
    await sign_in(admin, "admin-1", "demo-admin-1")
    await admin.get_by_test_id("tab-agents").click()
    await expect(admin.get_by_test_id("oidc-name")).to_have_value("Demo Corp")

    # Turned off: the inbox offers only the password.
    await admin.get_by_test_id("oidc-remove").click()
    await expect(admin.get_by_test_id("oidc-name")).to_have_value("")
    inbox = await pages.new(f"{platform.chat_url}/inbox?tenant=demo")
    await expect(inbox.get_by_test_id("login-agent")).to_be_visible()
    await expect(inbox.get_by_test_id("login-oidc")).to_be_hidden()

    # A wrong issuer is refused with the file's field and reason.
    await admin.get_by_test_id("oidc-name").fill("데모 그룹")
    await admin.get_by_test_id("oidc-issuer").fill("http://login.example.com")
    await admin.get_by_test_id("oidc-client-id").fill(CLIENT)
    await admin.get_by_test_id("oidc-secret-file").fill(str(tmp_path / "oidc-client-secret"))
    await admin.get_by_test_id("oidc-save").click()
    await expect(admin.get_by_test_id("oidc-error")).to_contain_text(
        "tenants.demo.oidc.issuer: must be an https:// URL"
    )
    await admin.get_by_test_id("oidc-issuer").fill(provider.issuer)
    await admin.get_by_test_id("oidc-save").click()
    await expect(admin.get_by_test_id("oidc-error")).to_have_text("")
    await pages.shot(admin, "admin-oidc")

    # The inbox now offers the company's sign-in, and it signs the agent in.
    inbox = await pages.new(f"{platform.chat_url}/inbox?tenant=demo")
    await expect(inbox.get_by_test_id("login-oidc")).to_have_text("데모 그룹 계정으로 로그인")
    await inbox.get_by_test_id("login-oidc").click()
    await expect(inbox.get_by_test_id("me")).to_contain_text("이수진")
    assert not pages.errors, pages.errors
