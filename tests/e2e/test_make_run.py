"""`switchboard run` (what `make run` starts) on a machine where port 4222 is already taken:
everything starts, and `switchboard status` shows every service healthy; NATS admits only the
services' own users, over TLS only, and none of them needed more than its permissions; gRPC, the
chat and the fax upload answer only over TLS with the run's own CA (gRPC only to a client
certificate). The commands its banner prints work as printed: the terminal agent (which Ctrl-C
stops cleanly), the fax upload; the mail the platform sends shows on the mail catcher's page."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import nats
import pytest

from switchboard.core import auth, events, nats_auth
from switchboard.core import grpc as sb_grpc
from switchboard.core.bus import Bus
from switchboard.core.tls import GrpcTls
from switchboard.fax.samples import ENGLISH, fax_page, pdf
from switchboard.testing.agents import AgentClient
from switchboard.testing.secured_nats import assert_refused
from switchboard.v1 import contact_pb2, events_pb2, router_pb2, router_pb2_grpc


@contextlib.contextmanager
def port_4222_taken() -> Iterator[None]:
    """Hold 4222 ourselves unless something (a system nats-server, say) already does."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 4222))
        s.listen(1)
    except OSError:
        pass  # already taken by someone else: just as good
    try:
        yield
    finally:
        s.close()


# The waiting contact's personal data: the case store keeps none of it in clear.
PERSONAL = ("+821055512345", "minji.kim@example.com", "Kim Minji", "my parcel 7731 never arrived")


def cli_tls(endpoints: dict[str, Any]) -> GrpcTls:
    """The CLI's certificate and the run's CA, as endpoints.json names them."""
    tls = endpoints["tls"]
    return GrpcTls(tls["cert_file"], tls["key_file"], tls["ca_file"])


async def assert_grpc_tls_only(endpoints: dict[str, Any]) -> None:
    """Every gRPC server answers a client with a certificate of the run's CA, and nobody else."""
    tls = cli_tls(endpoints)
    no_certificate = GrpcTls(ca_file=tls.ca_file)
    for name, target in endpoints["grpc"].items():
        assert await sb_grpc.check_health(target, tls=tls) == "SERVING", name
        assert (await sb_grpc.check_health(target)).startswith("UNREACHABLE"), name
        refused = await sb_grpc.check_health(target, tls=no_certificate)
        assert refused.startswith("UNREACHABLE"), name


async def assert_nats_tls_only(endpoints: dict[str, Any], run_dir: Path) -> None:
    """NATS admits a service's user only over TLS with the run's CA; without TLS, nobody."""
    passwords = json.loads((run_dir / "nats-credentials.json").read_text())
    tls = nats_auth.client_options(ca_file=endpoints["tls"]["ca_file"])
    await assert_refused(endpoints["nats_url"], **tls)  # anonymous, even over TLS
    # The right password, in clear: the server announces TLS as required and answers no PING.
    host, port = endpoints["nats_url"].removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    info = json.loads((await reader.readline()).decode().removeprefix("INFO "))
    assert info["tls_required"] is True
    connect = {"user": "chat", "pass": passwords["chat"], "verbose": False, "pedantic": False}
    writer.write(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    assert b"PONG" not in answer, answer
    writer.close()
    nc = await nats.connect(
        endpoints["nats_url"], user="chat", password=passwords["chat"], connect_timeout=2, **tls
    )
    assert nc.is_connected
    await nc.close()


def assert_https_only(endpoints: dict[str, Any]) -> None:
    """The chat's page, the fax upload and SIP over TLS take the run's CA's certificates."""
    tls = cli_tls(endpoints)
    assert endpoints["http"]["chat"].startswith("https://")
    fax = endpoints["listeners"]["Fax upload (HTTP POST /fax)"]
    assert fax.startswith("https://")
    context = ssl.create_default_context(cafile=tls.ca_file)
    sip = endpoints["listeners"]["SIP over TLS"].removeprefix("sips://")
    host, port = sip.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as sips:
            assert sips.version() is not None
    for url in (f"{endpoints['http']['chat']}/healthz", f"{fax}/healthz"):
        with urllib.request.urlopen(url, timeout=10, context=context) as resp:
            assert resp.status == 200, url
        with pytest.raises(urllib.error.URLError):  # the system's CAs do not know ours
            urllib.request.urlopen(url, timeout=10)


async def sign_in_and_queue(endpoints: dict[str, Any], secret: str, run_dir: Path) -> None:
    """A Japanese-speaking agent signs in, and a Korean contact waits (nobody speaks Korean)."""
    agent = AgentClient(endpoints["grpc"]["router"], secret, "demo", "ja-1", cli_tls(endpoints))
    await agent.sign_in({"ja": 4})
    await agent.close()
    # A chat contact, published as the chat service (the only user allowed to).
    passwords = json.loads((run_dir / "nats-credentials.json").read_text())
    bus = await Bus.connect(
        endpoints["nats_url"],
        source="test",
        user="chat",
        password=passwords["chat"],
        **nats_auth.client_options(ca_file=endpoints["tls"]["ca_file"]),
    )
    await bus.publish(
        events_pb2.ContactCreated(
            meta=events.new_meta("demo", contact_pb2.CHANNEL_CHAT, "test"),
            contact=contact_pb2.Contact(
                contact_id="waiting-1",
                tenant="demo",
                channel=contact_pb2.CHANNEL_CHAT,
                language="ko",
                identities=[
                    contact_pb2.CustomerIdentity(
                        kind=contact_pb2.IDENTITY_KIND_PHONE, value=PERSONAL[0]
                    ),
                    contact_pb2.CustomerIdentity(
                        kind=contact_pb2.IDENTITY_KIND_EMAIL, value=PERSONAL[1]
                    ),
                ],
                customer_name=PERSONAL[2],
                content=[contact_pb2.ContentPart(content_type="text/plain", text=PERSONAL[3])],
            ),
        )
    )
    await bus.drain()
    token = auth.mint(secret, "demo", "ops", ["admin"])
    async with sb_grpc.channel(endpoints["grpc"]["router"], token, tls=cli_tls(endpoints)) as ch:
        stub = router_pb2_grpc.RouterServiceStub(ch)
        for _ in range(200):
            stats = await stub.GetQueueStats(router_pb2.GetQueueStatsRequest())
            if stats.queues and stats.queues[0].waiting == 1:
                return
            await asyncio.sleep(0.05)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "switchboard.cli", *args]


def banner_commands(text: str) -> dict[str, list[str]]:
    """The `uv run switchboard ...` commands the banner prints, by subcommand: their arguments."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("uv run switchboard "):
            argv = shlex.split(line.split("  ")[0])[3:]
            found[argv[0]] = argv
    return found


def agent_stopped_by_ctrl_c(argv: list[str], env: dict[str, str]) -> None:
    """The banner's terminal agent signs in, takes the waiting chat, and Ctrl-C ends it with
    status 130, no traceback, signed out."""
    proc = subprocess.Popen(
        cli(*argv),
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("signed in as"):
            break
    assert any(line.startswith("signed in as ko-1") for line in seen), "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "Traceback" not in out + err, out + err
    agents = subprocess.run(cli("agents"), env=env, capture_output=True, text=True, timeout=60)
    assert not any(
        line.split()[:2] == ["ko-1", "available"] for line in agents.stdout.splitlines()
    ), agents.stdout


def mail_reaches_the_catcher(endpoints: dict[str, Any]) -> None:
    """A customer's mail opens a case; the platform's acknowledgement, with the case number,
    shows on the mail catcher's page."""
    host, port = endpoints["listeners"]["Email receive (SMTP)"].removeprefix("smtp://").split(":")
    message = EmailMessage()
    message["From"] = "Kim Minji <minji@example.kr>"
    message["To"] = "support@demo.switchboard.local"
    message["Subject"] = "주문 7731 배송 문의"
    message["Message-ID"] = "<make-run-1@example.kr>"
    message.set_content("주문한 물건이 아직 도착하지 않았습니다.")
    context = ssl.create_default_context(cafile=endpoints["tls"]["ca_file"])
    with smtplib.SMTP(host, int(port), timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.send_message(message)
    page = ""
    for _ in range(600):
        with urllib.request.urlopen(endpoints["mail_page"], timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/html")
            page = resp.read().decode()
        if "minji@example.kr" in page:
            break
        threading.Event().wait(0.1)
    assert "minji@example.kr" in page, page
    assert "support@demo.switchboard.local" in page
    assert "Thank you for your message. We have opened case" in page
    assert "주문 7731 배송 문의" in page  # the reply's subject


def portal_link_reaches_the_catcher(endpoints: dict[str, Any]) -> None:
    """The customer whose mail opened a case asks the portal for a sign-in link: it arrives at
    the mail catcher, and signs in once."""
    context = ssl.create_default_context(cafile=endpoints["tls"]["ca_file"])
    chat = endpoints["http"]["chat"]

    def post(path: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"{chat}/api/portal/{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    asked = {"tenant": "demo", "email": "minji@example.kr", "language": "ko"}
    assert post("link", asked) == (202, {"ok": True})
    found = None
    for _ in range(600):
        with urllib.request.urlopen(endpoints["mail_page"], timeout=10) as resp:
            page = resp.read().decode()
        found = re.search(r"(https://[^\s<\"]+/portal)#login=(pl1\.[\w.-]+)", page)
        if found:
            break
        threading.Event().wait(0.1)
    assert found, page
    assert found.group(1) == f"{chat}/portal" and "로그인 링크" in page
    status, session = post("session", {"token": found.group(2)})
    assert status == 200 and session["email"] == "minji@example.kr"
    assert post("session", {"token": found.group(2)})[0] == 401


@pytest.mark.timeout(180)
def test_run_with_4222_taken_then_status_is_all_healthy(tmp_path: Path) -> None:
    env = {**os.environ, "SWITCHBOARD_RUN_DIR": str(tmp_path / "run"), "PYTHONUNBUFFERED": "1"}
    env.pop("NATS_URL", None)
    with port_4222_taken():
        proc = subprocess.Popen(
            cli("run"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output: list[str] = []
        ready = threading.Event()

        def read() -> None:
            # A thread, not select(): select on the fd cannot see lines already in the buffer.
            assert proc.stdout is not None
            for raw in proc.stdout:
                output.append(raw.decode(errors="replace"))
                if "Switchboard is running." in output[-1]:
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            ready.wait(120)
            text = "".join(output)
            assert "Switchboard is running." in text, text[-4000:]
            endpoints = json.loads((tmp_path / "run" / "endpoints.json").read_text())
            assert not endpoints["nats_url"].endswith(":4222")
            status = subprocess.run(
                cli("status"), env=env, capture_output=True, text=True, timeout=60
            )
            assert status.returncode == 0, status.stdout + status.stderr
            for name in ("nats", "router", "case", "chat", "voice-gateway", "email-ingest", "fax"):
                assert any(
                    line.startswith(name) and "SERVING" in line
                    for line in status.stdout.splitlines()
                ), status.stdout
            assert "all services healthy" in status.stdout
            # Nothing about NATS's TLS connection closing (asyncio's eof_received notice).
            assert "eof_received" not in status.stderr, status.stderr
            for name, url in endpoints["metrics"].items():
                with urllib.request.urlopen(url, timeout=10) as resp:
                    scraped = resp.read().decode()
                assert "switchboard_nats_connected{service=" in scraped, name
            run_dir = tmp_path / "run"
            secret = (run_dir / "auth-secret").read_text().strip()
            asyncio.run(assert_grpc_tls_only(endpoints))
            assert_https_only(endpoints)
            assert (run_dir / "tls" / "ca.key").stat().st_mode & 0o777 == 0o600
            asyncio.run(sign_in_and_queue(endpoints, secret, run_dir))
            asyncio.run(assert_nats_tls_only(endpoints, run_dir))
            for name in (
                "nats-server.conf",
                "nats-credentials.json",
                "nats-jetstream-key",
                "case-master-key",
            ):
                assert (run_dir / name).stat().st_mode & 0o777 == 0o600, name
            key = (run_dir / "nats-jetstream-key").read_text().strip()
            assert key not in (run_dir / "nats-server.conf").read_text()  # given in its env
            agents = subprocess.run(
                cli("agents"), env=env, capture_output=True, text=True, timeout=60
            )
            assert agents.returncode == 0, agents.stdout + agents.stderr
            assert any(
                line.split()[:2] == ["ja-1", "available"] for line in agents.stdout.splitlines()
            ), agents.stdout
            queues = subprocess.run(
                cli("queues"), env=env, capture_output=True, text=True, timeout=60
            )
            assert queues.returncode == 0, queues.stdout + queues.stderr
            assert any(
                line.split()[:2] == ["general", "1"] for line in queues.stdout.splitlines()
            ), queues.stdout
            # The banner's commands, as printed.
            commands = banner_commands(text)
            assert set(commands) >= {"status", "agent", "queues", "fax"}, text
            agent_stopped_by_ctrl_c(commands["agent"], env)
            document = tmp_path / commands["fax"][2]
            document.write_bytes(pdf([fax_page(ENGLISH)]))
            upload = subprocess.run(
                cli(*commands["fax"]),
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert upload.returncode == 0 and upload.stdout.startswith("202"), upload
            mail_reaches_the_catcher(endpoints)
            portal_link_reaches_the_catcher(endpoints)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(10)
        text = "".join(output)
        assert proc.returncode == 0, text[-4000:]
        assert "stopped." in text
        # each service drained on SIGTERM and stopped by itself (none had to be killed)
        for name in ("router", "case", "chat", "voice-gateway", "email-ingest", "fax"):
            assert f"{name} stopped" in text, name
        assert "did not stop in time" not in text
        # every service did its work within its NATS permissions
        nats_log = (tmp_path / "run" / "nats-server.log").read_text()
        assert "Violation" not in nats_log, nats_log[-4000:]
        # and JetStream stored the waiting contact (its event, the router's journal) encrypted
        stored = [p for p in (tmp_path / "run" / "nats").rglob("*") if p.is_file()]
        assert [p for p in stored if b"waiting-1" in p.read_bytes()] == []
        # and the case store recorded it with its personal data sealed
        case_store = b"".join(p.read_bytes() for p in (tmp_path / "run").glob("case.db*"))
        assert b"waiting-1" in case_store
        assert [s for s in PERSONAL if s.encode() in case_store] == []
