"""Sign-in through a tenant's company directory (OIDC, Authorization Code with PKCE), over HTTP
against a real chat app on a real nats-server and a real OIDC provider (libs/testing): the
provider's answer is verified (signature, iss, aud, exp, nonce), a state is used once, the user
must be an enabled agent of the tenant's directory, and one tenant's provider signs in to no
other tenant."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from switchboard.chat.bootstrap import ChatApp
from switchboard.chat.inbox import directory
from switchboard.core import auth as sb_auth
from switchboard.core.config import ConfigError
from switchboard.testing.oidc import OidcProvider

from .conftest import SECRET, chat_settings, config_for_tests

HASH = directory.hash_password("s3cret-pass")


def agents_yaml(issuer: str, secret_file: Path) -> str:
    return f"""
tenants:
  demo:
    oidc:
      name: Demo Corp
      issuer: {issuer}
      client_id: switchboard-demo
      client_secret_file: {secret_file}
      agent_claim: preferred_username
    agents:
      - {{id: ko-1, name: 이수진, role: agent, ui_language: ko, password: "{HASH}"}}
      - {{id: gone, name: Gone, role: agent, password: "{HASH}", disabled: true}}
      - {{id: boss, name: Boss, role: admin, password: "{HASH}"}}
      - {{id: sup, name: Sup, role: supervisor, password: "{HASH}"}}
  acme:
    oidc:
      name: Acme
      issuer: {issuer}
      client_id: switchboard-acme
      client_secret_file: {secret_file}
      agent_claim: email
      email_domain: acme.example
    agents:
      - {{id: ko-1, name: Acme Kim, role: supervisor, password: "{HASH}"}}
      - {{id: acme-only, name: Acme Only, role: agent, password: "{HASH}"}}
  plain:
    agents:
      - {{id: ko-1, name: Plain Kim, role: agent, password: "{HASH}"}}
"""


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    clients = {"switchboard-demo": ("demo-secret", []), "switchboard-acme": ("demo-secret", [])}
    user = {"sub": "u-1", "preferred_username": "ko-1", "email": "ko-1@acme.example"}
    with OidcProvider(clients, user) as p:
        yield p


@pytest.fixture
async def chat(nats_url: str, tmp_path: Path, provider: OidcProvider) -> AsyncIterator[ChatApp]:
    secret = tmp_path / "client-secret"
    secret.write_text("demo-secret\n", encoding="utf-8")
    path = tmp_path / "agents.yaml"
    path.write_text(agents_yaml(provider.issuer, secret), encoding="utf-8")
    app = ChatApp(chat_settings(nats_url, CHAT_AGENTS_FILE=str(path)), config=config_for_tests())
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def _set_cookies(r: aiohttp.ClientResponse) -> dict[str, str]:
    out = {}
    for header in r.headers.getall("set-cookie", []):
        name, _, rest = header.partition("=")
        out[name] = rest.split(";", 1)[0]
    return out


class Browser:
    """A browser's part of the flow, step by step (cookies kept by hand, redirects not followed)."""

    def __init__(self, app: ChatApp) -> None:
        self.base = f"http://127.0.0.1:{app.http_port}"
        self.cookies: dict[str, str] = {}
        self.http = aiohttp.ClientSession()

    async def get(self, url: str) -> tuple[int, str]:
        url = url if url.startswith("http") else self.base + url
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        async with self.http.get(
            url, allow_redirects=False, headers={"cookie": header} if header else {}
        ) as r:
            if url.startswith(self.base):
                self.cookies.update(_set_cookies(r))
            return r.status, r.headers.get("location", "")

    async def to_callback(self, tenant: str) -> str:
        """Start the sign-in and let the provider consent: the callback URL it sends back."""
        status, location = await self.get(f"/api/agent/oidc/start?tenant={tenant}&page=inbox")
        assert status == 303 and location.startswith("http://127.0.0.1"), location
        assert "code_challenge_method=S256" in location and "nonce=" in location
        status, callback = await self.get(location)
        assert status == 302, callback
        return callback

    async def result(self) -> tuple[int, Any]:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        async with self.http.post(
            self.base + "/api/agent/oidc/result", headers={"cookie": header}
        ) as r:
            self.cookies.update(_set_cookies(r))
            return r.status, await r.json()

    async def sign_in(self, tenant: str) -> str:
        """The whole flow: where the page is sent back to."""
        status, back = await self.get(await self.to_callback(tenant))
        assert status == 303
        return back

    async def close(self) -> None:
        await self.http.close()


@pytest.fixture
async def browser(chat: ChatApp) -> AsyncIterator[Browser]:
    b = Browser(chat)
    try:
        yield b
    finally:
        await b.close()


def refusal(back: str) -> str:
    fragment = urlsplit(back).fragment
    assert fragment.startswith("oidc-error="), back
    return fragment.split("=", 1)[1]


async def test_the_directory_user_gets_the_password_sign_ins_token(browser: Browser) -> None:
    async with browser.http.get(browser.base + "/api/agent/oidc?tenant=demo") as r:
        assert (await r.json())["name"] == "Demo Corp"
    async with browser.http.get(browser.base + "/api/agent/oidc?tenant=plain") as r:
        assert (await r.json())["name"] is None
    back = await browser.sign_in("demo")
    assert back == "/inbox?tenant=demo#oidc=done"
    status, body = await browser.result()
    assert status == 200, body
    principal = sb_auth.verify(SECRET, body["token"])
    assert (principal.tenant, principal.subject, principal.roles) == ("demo", "ko-1", {"agent"})
    assert body["agent"]["name"] == "이수진" and body["agent"]["ui_language"] == "ko"
    # The token waits for its page once.
    status, body = await browser.result()
    assert status == 401, body


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param({"forge": True}, id="forged-signature"),
        pytest.param({"exp": -3600, "iat": -7200}, id="expired"),
        pytest.param({"nonce": "someone-elses-nonce"}, id="wrong-nonce"),
        pytest.param({"aud": "another-client"}, id="wrong-audience"),
        pytest.param({"iss": "https://evil.example"}, id="wrong-issuer"),
    ],
)
async def test_an_id_token_that_does_not_verify_is_refused(
    browser: Browser, provider: OidcProvider, tamper: dict[str, Any]
) -> None:
    if tamper.pop("forge", False):
        provider.forge = True
    now = int(time.time())
    provider.claims = {k: now + v if k in ("exp", "iat") else v for k, v in tamper.items()}
    back = await browser.sign_in("demo")
    assert refusal(back) == "refused"
    assert provider.issued, "the provider did answer"
    assert (await browser.result())[0] == 401


async def test_a_replayed_state_or_one_from_another_browser_is_refused(
    browser: Browser, chat: ChatApp
) -> None:
    callback = await browser.to_callback("demo")
    state_cookie = dict(browser.cookies)
    # Another browser (no state cookie) cannot finish this sign-in.
    other = Browser(chat)
    try:
        status, back = await other.get(callback)
        assert status == 303 and refusal(back) == "expired"
    finally:
        await other.close()
    status, back = await browser.get(callback)
    assert back.endswith("#oidc=done")
    # The same answer again, with the state cookie put back: used already.
    browser.cookies = state_cookie
    status, back = await browser.get(callback)
    assert refusal(back) == "expired"
    # A state that is not the cookie's is refused too.
    callback = await browser.to_callback("demo")
    query = parse_qs(urlsplit(callback).query)
    status, back = await browser.get(
        f"/api/agent/oidc/callback?code={query['code'][0]}&state=forged-state"
    )
    assert refusal(back) == "expired"


async def test_unknown_and_disabled_users_are_refused(
    browser: Browser, provider: OidcProvider
) -> None:
    provider.user = {"sub": "u-2", "preferred_username": "stranger"}
    assert refusal(await browser.sign_in("demo")) == "unknown"
    provider.user = {"sub": "u-3", "preferred_username": "gone"}
    assert refusal(await browser.sign_in("demo")) == "disabled"
    assert (await browser.result())[0] == 401


async def test_a_tenants_provider_signs_in_to_no_other_tenant(
    browser: Browser, provider: OidcProvider
) -> None:
    # acme maps the email; the same user is acme's ko-1, a supervisor there.
    back = await browser.sign_in("acme")
    assert back == "/inbox?tenant=acme#oidc=done"
    status, body = await browser.result()
    principal = sb_auth.verify(SECRET, body["token"])
    assert (principal.tenant, principal.subject, principal.roles) == (
        "acme",
        "ko-1",
        {"supervisor"},
    )
    # An ID token the provider made for demo's client does not sign in to acme.
    provider.claims = {"aud": "switchboard-demo"}
    assert refusal(await browser.sign_in("acme")) == "refused"
    provider.claims = {}
    # acme's own agent is nobody in demo's directory.
    provider.user = {"sub": "u-4", "preferred_username": "acme-only"}
    assert refusal(await browser.sign_in("demo")) == "unknown"
    # An address of another domain is nobody at acme.
    provider.user = {"sub": "u-5", "email": "acme-only@evil.example"}
    assert refusal(await browser.sign_in("acme")) == "unknown"
    # A tenant without a provider has no company sign-in.
    status, back = await browser.get("/api/agent/oidc/start?tenant=plain&page=wallboard")
    assert status == 303 and back == "/wallboard?tenant=plain#oidc-error=unavailable"


async def _call(
    b: Browser, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with b.http.request(method, b.base + path, json=body, headers=headers) as r:
        if r.content_type.startswith("application/json"):
            return r.status, await r.json()
        return r.status, await r.text()


async def _token(b: Browser, agent_id: str) -> str:
    body = {"tenant": "demo", "agent_id": agent_id, "password": "s3cret-pass"}
    status, got = await _call(b, "POST", "/api/agent/login", body)
    assert status == 200, got
    return str(got["token"])


async def test_the_console_sets_and_removes_the_company_sign_in(
    browser: Browser, provider: OidcProvider, tmp_path: Path
) -> None:
    boss, sup = await _token(browser, "boss"), await _token(browser, "sup")
    status, listed = await _call(browser, "GET", "/api/admin/agents", token=boss)
    assert listed["oidc"]["name"] == "Demo Corp"
    version = listed["version"]
    settings = {
        "name": "Demo Group",
        "issuer": provider.issuer + "/",
        "client_id": "switchboard-demo",
        "client_secret_file": str(tmp_path / "client-secret"),
        "agent_claim": "preferred_username",
        "email_domain": "",
    }
    # Checked as the file is: the field and what is wrong with it.
    wrong = {**settings, "issuer": "http://login.example.com"}
    status, body = await _call(browser, "PUT", "/api/admin/oidc", {"oidc": wrong}, boss)
    assert status == 400
    assert body["error"].startswith("tenants.demo.oidc.issuer: must be an https:// URL"), body
    status, body = await _call(browser, "PUT", "/api/admin/oidc", {"oidc": settings}, sup)
    assert status == 403, body
    # Removed: no company sign-in for demo, acme's untouched.
    status, body = await _call(
        browser, "PUT", "/api/admin/oidc", {"oidc": None, "version": version}, boss
    )
    assert status == 200 and body["oidc"] is None, body
    async with browser.http.get(browser.base + "/api/agent/oidc?tenant=demo") as r:
        assert (await r.json())["name"] is None
    async with browser.http.get(browser.base + "/api/agent/oidc?tenant=acme") as r:
        assert (await r.json())["name"] == "Acme"
    status, back = await browser.get("/api/agent/oidc/start?tenant=demo&page=inbox")
    assert refusal(back) == "unavailable"
    # Set again under another name: the button says it, and the sign-in works.
    status, body = await _call(browser, "PUT", "/api/admin/oidc", {"oidc": settings}, boss)
    assert status == 200 and body["oidc"]["name"] == "Demo Group", body
    assert body["oidc"]["issuer"] == provider.issuer and "email_domain" not in body["oidc"]
    async with browser.http.get(browser.base + "/api/agent/oidc?tenant=demo") as r:
        assert (await r.json())["name"] == "Demo Group"
    assert (await browser.sign_in("demo")).endswith("#oidc=done")
    # Exported with the agents, and read back the same.
    status, text = await _call(browser, "GET", "/api/admin/agents.yaml", token=boss)
    exported = directory.load_text(text)
    assert exported.provider("demo") == directory.OidcConfig(
        "Demo Group", provider.issuer, "switchboard-demo", str(tmp_path / "client-secret")
    )
    assert exported.provider("acme") is None  # only the caller's tenant
    status, audit = await _call(browser, "GET", "/api/admin/audit", token=boss)
    actions = [e["action"] for e in audit["entries"]]
    assert actions[:2] == ["oidc.set", "oidc.remove"]


# ---- the agents file's oidc section ------------------------------------------------------------

BASE = """
tenants:
  demo:
    oidc:
      name: Demo Corp
      issuer: https://login.example.com/realms/demo
      client_id: switchboard
      client_secret_file: /run/secrets/oidc/demo
{extra}    agents: []
"""


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("      agent_claim: groups\n", "tenants.demo.oidc.agent_claim: must be one of"),
        ("      agent_claim: email\n", "tenants.demo.oidc.email_domain: is required when"),
        ("      email_domain: not a domain\n", "tenants.demo.oidc.email_domain: must be a domain"),
        ("      scopes: [x]\n", "agents.yaml:9: tenants.demo.oidc.scopes: unknown field"),
    ],
)
def test_the_oidc_section_is_checked_like_the_rest_of_the_file(extra: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        directory.load_text(BASE.format(extra=extra), "agents.yaml")
    assert where in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            "https://login.example.com/realms/demo",
            "http://login.example.com",
            "oidc.issuer: must be an https:// URL",
        ),
        (
            "/run/secrets/oidc/demo",
            "secrets/demo",
            "oidc.client_secret_file: must be an absolute path",
        ),
        ("      client_id: switchboard\n", "", "tenants.demo.oidc.client_id: is required"),
    ],
)
def test_a_wrong_oidc_value_names_its_field_and_line(old: str, new: str, where: str) -> None:
    text = BASE.format(extra="").replace(old, new)
    with pytest.raises(ConfigError) as err:
        directory.load_text(text, "agents.yaml")
    assert where in str(err.value)
    assert "agents.yaml:" in str(err.value)


def test_the_oidc_section_survives_the_export() -> None:
    text = BASE.format(extra="      agent_claim: email\n      email_domain: Example.COM\n")
    loaded = directory.load_text(text)
    provider = loaded.provider("demo")
    assert provider is not None and provider.email_domain == "example.com"
    again = directory.load_text(directory.dump(loaded))
    assert again == loaded
    assert again.tenant("demo").provider("demo") == provider
    assert (
        loaded.with_tenant("demo", directory.load_text("tenants: {demo: {agents: []}}")).provider(
            "demo"
        )
        is None
    )
