"""`switchboard run`: the embedded default. One nats-server with JetStream, the case store's
migrations on SQLite, and every service as a local process with prefixed logs.

Ports: each service takes its usual port when it is free and another free port when not; a
nats-server already on 4222 (or any other program) never breaks the start. NATS_URL, when given,
is used instead of starting a server. The server started here admits no anonymous client: each
service connects as its own user with its own permissions (switchboard.core.nats_auth), and
JetStream encrypts what it stores. The services speak TLS (cli/local_tls.py): gRPC with mutual
TLS between them, HTTPS for the chat and the fax upload, STARTTLS on SMTP, with certificates
from a local CA in the run directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from switchboard.cli import demo, local_tls
from switchboard.cli.endpoints import (
    SERVICES,
    Endpoints,
    auth_secret,
    case_master_key_file,
    fax_upload_secret,
    nats_server_config,
)
from switchboard.cli.mailcatcher import MailCatcher
from switchboard.core.embedded_nats import NatsServer, free_port
from switchboard.core.grpc import check_health
from switchboard.core.settings import DEVELOPMENT

logger = logging.getLogger("switchboard.run")

COLOURS = ["\033[36m", "\033[35m", "\033[32m", "\033[33m", "\033[34m", "\033[31m", "\033[37m"]
RESET = "\033[0m"
MAX_RESTARTS = 5


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(preferred: int, taken: set[int], host: str = "127.0.0.1") -> int:
    if preferred and preferred not in taken and port_is_free(preferred, host):
        taken.add(preferred)
        return preferred
    while True:
        port = free_port(host)
        if port not in taken:
            taken.add(port)
            return port


def voice_prompt_cache(run_dir: Path) -> Path:
    """The user's cache folder for synthesised prompts ($XDG_CACHE_HOME or ~/.cache), else the
    run folder's when that cannot be written."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    cache = Path(base) / "switchboard" / "voice-prompts"
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return run_dir / "voice-prompts" / "cache"
    return cache if os.access(cache, os.W_OK) else run_dir / "voice-prompts" / "cache"


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    colour: str
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0


class Supervisor:
    def __init__(self, directory: Path, colour: bool | None = None) -> None:
        self.dir = directory
        self.colour = sys.stdout.isatty() if colour is None else colour
        self.children: dict[str, Child] = {}
        self.stopping = asyncio.Event()
        self._pumps: list[asyncio.Task[None]] = []
        self._watchers: list[asyncio.Task[None]] = []
        self.nats: NatsServer | None = None
        self.mail: MailCatcher | None = None

    def _print(self, child: Child, line: str) -> None:
        prefix = f"{child.name:>13} | "
        if self.colour:
            prefix = f"{child.colour}{prefix}{RESET}"
        sys.stdout.write(prefix + line + "\n")
        sys.stdout.flush()

    async def _spawn(self, child: Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        self._pumps.append(asyncio.create_task(self._pump(child, child.proc)))

    async def _pump(self, child: Child, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout
        async for raw in proc.stdout:
            self._print(child, raw.decode(errors="replace").rstrip())

    async def _watch(self, child: Child) -> None:
        """Restart a service that dies while the platform runs (bounded, with back-off)."""
        while not self.stopping.is_set():
            assert child.proc
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            child.restarts += 1
            if child.restarts > MAX_RESTARTS:
                self._print(child, f"exited with {code}; gave up after {MAX_RESTARTS} restarts")
                self.stopping.set()
                return
            delay = min(2**child.restarts * 0.25, 10)
            self._print(child, f"exited with {code}; restarting in {delay:.1f}s")
            await asyncio.sleep(delay)
            await self._spawn(child)

    async def start(self) -> Endpoints:
        self.dir.mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        secret = auth_secret(self.dir, create=True)
        base_env = {
            **os.environ,
            "SWITCHBOARD_AUTH_SECRET": secret,
            "SWITCHBOARD_TENANTS": os.environ.get("SWITCHBOARD_TENANTS", "demo"),
            # The embedded default is the one deployment that is not production.
            "SWITCHBOARD_MODE": DEVELOPMENT,
            "PYTHONUNBUFFERED": "1",
            "CASE_DATABASE_URL": os.environ.get(
                "CASE_DATABASE_URL", f"sqlite+aiosqlite:///{self.dir / 'case.db'}"
            ),
            # The voice gateway's writable state (in a pod: an emptyDir).
            "VOICE_PROMPTS_DIR": os.environ.get(
                "VOICE_PROMPTS_DIR", str(self.dir / "voice-prompts")
            ),
            # Its spoken prompts, synthesised once per machine rather than once per run folder.
            "VOICE_PROMPT_CACHE_DIR": os.environ.get(
                "VOICE_PROMPT_CACHE_DIR", str(voice_prompt_cache(self.dir))
            ),
        }
        if not os.environ.get("CASE_MASTER_KEY"):
            base_env.setdefault("CASE_MASTER_KEY_FILE", str(case_master_key_file(self.dir)))
        tenants = [t.strip() for t in base_env["SWITCHBOARD_TENANTS"].split(",") if t.strip()]
        tenant = tenants[0] if tenants else "demo"
        # The mail the services send goes to the mail catcher, unless a relay is configured.
        self.mail = await MailCatcher(self.dir).start(
            choose_port(1025, taken), choose_port(8025, taken)
        )
        if not os.environ.get("EMAIL_RELAY_HOST"):
            base_env.update(EMAIL_RELAY_HOST="127.0.0.1", EMAIL_RELAY_PORT=str(self.mail.smtp_port))
        if not os.environ.get("CASE_SMTP_HOST"):
            base_env.update(CASE_SMTP_HOST="127.0.0.1", CASE_SMTP_PORT=str(self.mail.smtp_port))
        # The fax upload takes uploads signed with the first tenant's secret.
        if not (os.environ.get("FAX_WEBHOOK_SECRETS") or os.environ.get("FAX_WEBHOOK_SECRET")):
            secret_of_fax = fax_upload_secret(self.dir, create=True)
            base_env["FAX_WEBHOOK_SECRETS"] = f"{tenant}={secret_of_fax}"
        tls = local_tls.LocalTls(self.dir) if local_tls.enabled() else None
        nats_url = os.environ.get("NATS_URL", "")
        passwords: dict[str, str] = {}
        if not nats_url:
            nats_url, passwords = await self._start_nats(taken, tenants, tls)
        base_env["NATS_URL"] = nats_url
        endpoints = Endpoints(nats_url=nats_url, tenant=tenant, mail_page=self.mail.url)
        endpoints.listeners["Mail catcher (SMTP)"] = f"smtp://127.0.0.1:{self.mail.smtp_port}"
        if tls is not None:
            endpoints.tls = tls.cli()

        await self._migrate(base_env)

        for i, spec in enumerate(SERVICES):
            env = dict(base_env)
            if passwords:  # each service connects as its own NATS user
                env.update(NATS_USER=spec.name, NATS_PASSWORD=passwords[spec.name])
            if tls is not None:
                env.update(tls.service_env(spec))
            grpc_port = choose_port(int(os.environ.get(spec.grpc_env, spec.grpc_default)), taken)
            env[spec.grpc_env] = str(grpc_port)
            endpoints.grpc[spec.name] = f"127.0.0.1:{grpc_port}"
            # Later services find this one's gRPC address under these names (SERVICES is ordered
            # so that case and router start first, the voice gateway before the chat).
            address = endpoints.grpc[spec.name]
            key = spec.name.upper().replace("-", "_")
            base_env[f"SWITCHBOARD_{key}_ADDR"] = address
            for alias in PEER_ALIASES.get(spec.name, ()):
                base_env[alias] = address
            metrics_port = choose_port(9464 + i, taken)
            env["METRICS_PORT"] = str(metrics_port)
            endpoints.metrics[spec.name] = f"http://127.0.0.1:{metrics_port}/metrics"
            if spec.http_env:
                http_port = choose_port(
                    int(os.environ.get(spec.http_env, spec.http_default)), taken
                )
                env[spec.http_env] = str(http_port)
                scheme = "https" if tls is not None else "http"
                endpoints.http[spec.name] = f"{scheme}://127.0.0.1:{http_port}"
            for listener in spec.listeners:
                if listener.tls_only and tls is None:
                    continue
                port = choose_port(int(os.environ.get(listener.env, listener.default)), taken)
                env[listener.env] = str(port)
                scheme = (tls is not None and listener.tls_scheme) or listener.scheme
                prefix = f"{scheme}://" if scheme else ""
                endpoints.listeners[listener.label] = f"{prefix}127.0.0.1:{port}"
            child = Child(
                spec.name, [sys.executable, "-m", spec.module], env, COLOURS[i % len(COLOURS)]
            )
            self.children[spec.name] = child
            await self._spawn(child)
        endpoints.save(self.dir / "endpoints.json")
        for child in self.children.values():
            self._watchers.append(asyncio.create_task(self._watch(child)))
        await self._wait_healthy(endpoints)
        await self._seed(endpoints, secret)
        return endpoints

    async def _seed(self, endpoints: Endpoints, secret: str) -> None:
        """The demo knowledge base (a failure is logged: the platform runs without it)."""
        try:
            await demo.seed_knowledge(
                endpoints.grpc["case"],
                secret,
                endpoints.tenant,
                endpoints.grpc_tls(environ={}),
            )
        except Exception as exc:
            logger.warning("demo knowledge base not seeded: %s", exc)

    async def _start_nats(
        self, taken: set[int], tenants: list[str], tls: local_tls.LocalTls | None
    ) -> tuple[str, dict[str, str]]:
        """Start nats-server with its users, encryption and (with `tls`) TLS required; its URL and
        each user's password."""
        port = choose_port(4222, taken)
        config, passwords, env = nats_server_config(
            self.dir,
            [t.strip() for t in tenants] or None,
            tls.nats_server() if tls is not None else None,
        )
        self.nats = NatsServer(self.dir / "nats", port=port, config_file=config, env=env)
        await asyncio.to_thread(self.nats.start, 15.0, self.dir / "nats-server.log")
        if port != 4222:
            logger.info("port 4222 is taken; nats-server listens on %d", port)
        return self.nats.url, passwords

    async def _migrate(self, env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchboard.case",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        for line in out.decode(errors="replace").splitlines():
            logger.info("migrate | %s", line)
        if proc.returncode != 0:
            raise RuntimeError(f"case store migrations failed with exit code {proc.returncode}")

    async def _wait_healthy(self, endpoints: Endpoints, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pending = dict(endpoints.grpc)
        tls = endpoints.grpc_tls(environ={})  # this run's own CA, whatever the shell says
        while pending and loop.time() < deadline and not self.stopping.is_set():
            for name, target in list(pending.items()):
                if await check_health(target, timeout=1.0, tls=tls) == "SERVING":
                    del pending[name]
            if pending:
                await asyncio.sleep(0.2)
        if pending:
            raise RuntimeError(f"not healthy in time: {', '.join(sorted(pending))}")

    async def stop(self) -> None:
        self.stopping.set()
        await self._terminate(list(self.children.values()))
        if self.nats is not None:
            await asyncio.to_thread(self.nats.stop)
        if self.mail is not None:
            await self.mail.stop()
        for task in self._watchers + self._pumps:
            task.cancel()

    async def _terminate(self, children: list[Child], grace: float = 10.0) -> None:
        live = [c for c in children if c.proc and c.proc.returncode is None]
        for child in live:
            assert child.proc
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        for child in live:
            assert child.proc
            try:
                await asyncio.wait_for(child.proc.wait(), grace)
            except TimeoutError:
                self._print(child, "did not stop in time; killing")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                await child.proc.wait()


# Environment variables under which services look for a peer's gRPC address.
PEER_ALIASES: dict[str, tuple[str, ...]] = {
    "router": ("CHAT_ROUTER_ADDR", "VOICE_ROUTER_ADDR"),
    "case": ("CHAT_CASE_ADDR",),
    # The wallboard's live call supervision asks the gateway (it starts before the chat).
    "voice-gateway": ("CHAT_VOICE_ENDPOINTS",),
}


# The commands the banner suggests, as typed in the repository (`uv run` finds the workspace's
# `switchboard`); tests parse each with the CLI's own parser.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("uv run switchboard status", "health of every service"),
    (
        "uv run switchboard agent --id ko-1 --language ko:5 --auto-accept",
        "answer chats as an agent",
    ),
    ("uv run switchboard queues", "what the router sees (and: agents)"),
)
FAX_SAMPLE = "page.pdf"


def banner(endpoints: Endpoints, directory: Path) -> str:
    chat = endpoints.http.get("chat", "")
    lines = [
        "",
        "Switchboard is running.",
        f"  Web chat (customer):  {chat}/?tenant={endpoints.tenant}",
        f"  Agent inbox:          {chat}/inbox   (demo agents: see docs/inbox.md)",
        f"  Wallboard:            {chat}/wallboard",
        f"  Admin console:        {chat}/admin   (see docs/admin.md)",
        f"  Quality (QA):         {chat}/qa",
        f"  Knowledge base:       {chat}/kb   (write, review, publish)",
        f"  Customer portal:      {chat}/portal?tenant={endpoints.tenant}   (sign-in links: Sent mail)",
    ]
    if endpoints.mail_page:
        lines.append(
            f"  Sent mail:            {endpoints.mail_page}   (replies, receipts, transcripts)"
        )
    lines.append(f"  NATS:                 {endpoints.nats_url}")
    if endpoints.tls:
        ca = endpoints.tls["ca_file"]
        lines.append(f"  TLS CA:               {ca}   (trust it, or accept the browser's warning)")
    for label, address in endpoints.listeners.items():
        lines.append(f"  {label + ':':<21} {address}")
    for name, target in endpoints.grpc.items():
        lines.append(f"  gRPC {name + ':':<16} {target}")
    lines += [f"  State:                {directory}", ""]
    lines += [f"  {command:<68} {text}" for command, text in COMMANDS]
    if "Fax upload (HTTP POST /fax)" in endpoints.listeners:
        lines.append(f"  {fax_command(FAX_SAMPLE):<68} a received fax (PDF or TIFF)")
    sip = endpoints.listeners.get("SIP (UDP/TCP)")
    if sip:
        first, second = demo.baresip_recipe(directory, sip)
        lines += [
            "",
            f"  Call the demo hotline {demo.DEMO_NUMBER} with baresip:",
            f"    {first}",
            f"    {second}",
        ]
    lines += ["Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def fax_command(path: str) -> str:
    return f"uv run switchboard fax upload {path} --from +8225550100"


async def run(directory: Path) -> int:
    supervisor = Supervisor(directory)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        endpoints = await supervisor.start()
    except Exception as exc:
        print(f"switchboard run: {exc}", file=sys.stderr)
        await supervisor.stop()
        return 1
    print(banner(endpoints, directory), flush=True)
    stopped = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(supervisor.stopping.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    print("\nstopping Switchboard…", flush=True)
    await supervisor.stop()
    print("stopped.", flush=True)
    return 0 if stop.is_set() else 1
