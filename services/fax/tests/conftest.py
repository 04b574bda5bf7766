"""Fax servers for the replies: a scripted stand-in for what a modemless HylaFAX cannot show, and
Debian's real HylaFAX on a throwaway spool. (The fax service with the real router is an
end-to-end fixture: tests/e2e/fax/conftest.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from switchboard.core.embedded_nats import free_port


class FakeHylaFax:
    """What a modemless HylaFAX server cannot show: a job that HylaFAX retries after a failed call
    and then sends (DONE). This stand-in answers like Debian's hfaxd 6.0.7 does in
    `test_replies.py`'s real-server tests (`213 <value>` to a JPARM query, 460 to a job without
    LASTTIME, FORM before STOT); each poll of a submitted job moves it along `script`
    ((state, status, tries) triples)."""

    def __init__(
        self,
        password: str = "secret",
        script: tuple[tuple[str, str, int], ...] = (),
    ) -> None:
        self.password = password
        self.script = list(script)
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, dict[str, str]] = {}
        self.commands: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeHylaFax:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        say("220 fake.example server (HylaFAX (tm) Version 6.0.7) ready.")
        data_server: asyncio.Server | None = None
        received: asyncio.Future[bytes] | None = None
        current = ""
        form = "PS"
        user_ok = False
        while True:
            raw = await reader.readline()
            if not raw:
                break
            line = raw.decode().rstrip("\r\n")
            self.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == "USER":
                say("331 Password required for user.")
            elif verb == "PASS":
                user_ok = arg == self.password
                say("230 User logged in." if user_ok else "530 Login incorrect.")
            elif not user_ok and verb != "QUIT":
                say("530 Please login with USER and PASS.")
            elif verb == "TYPE":
                say("200 Type set to Image.")
            elif verb == "FORM":
                form = arg.upper()
                say(f"200 Format set to {form}.")
            elif verb == "PASV":
                loop = asyncio.get_running_loop()
                received = loop.create_future()

                async def take(
                    r: asyncio.StreamReader,
                    w: asyncio.StreamWriter,
                    into: asyncio.Future[bytes] = received,
                ) -> None:
                    body = await r.read()
                    w.close()
                    if not into.done():
                        into.set_result(body)

                data_server = await asyncio.start_server(take, "127.0.0.1", 0)
                p = data_server.sockets[0].getsockname()[1]
                say(f"227 Entering Passive Mode (127,0,0,1,{p // 256},{p % 256})")
            elif verb == "STOT":
                suffix = {"TIFF": "tif", "PDF": "pdf"}.get(form, "ps")
                name = f"/tmp/doc{len(self.files) + 1}.{suffix}"
                say(f"150 FILE: {name} (Opening new data connection).")
                await writer.drain()
                assert received is not None
                self.files[name] = await asyncio.wait_for(received, 10)
                if data_server is not None:
                    data_server.close()
                say(f"226 Transfer complete (FILE: {name}).")
            elif verb == "JNEW":
                current = str(100 + len(self.jobs))
                self.jobs[current] = {"STATE": "SUSPENDED", "STATUS": "", "TOTTRIES": "0"}
                say(f"200 New job created: jobid: {current} groupid: {current}.")
            elif verb == "JOB":
                if arg in self.jobs and self.jobs[arg]["STATE"] != "SUSPENDED" and self.script:
                    state, status, tries = self.script.pop(0)
                    self.jobs[arg].update(STATE=state, STATUS=status, TOTTRIES=str(tries))
                current = arg
                say(f"200 Current job: jobid: {arg} groupid: {arg}.")
            elif verb == "JPARM":
                key, _, value = arg.partition(" ")
                if value:
                    self.jobs[current][key.upper()] = value.strip('"')
                    if key.upper() == "DOCUMENT":
                        say(f"200 Added document {value} as docq/doc{current}.tif.{current}.")
                    else:
                        say(f"213 {key.upper()} set to {value}.")
                else:
                    say(f"213 {self.jobs[current].get(key.upper(), '')}")
            elif verb == "JSUBM":
                if "LASTTIME" not in self.jobs[current]:
                    # no LASTTIME: hfaxd's kill time is in 1970 and faxq refuses the job
                    say(
                        f"460 Failed to submit job {current}: Unspecified reason "
                        "(scheduler NAK'd request)."
                    )
                else:
                    self.jobs[current]["STATE"] = "PENDING"
                    say(f"200 Job {current} submitted.")
            elif verb == "QUIT":
                say("221 Goodbye.")
                await writer.drain()
                break
            else:
                say(f"500 {verb}: Command not recognized.")
            await writer.drain()
        writer.close()


@pytest.fixture
async def fake_hylafax() -> AsyncIterator[FakeHylaFax]:
    """A job whose first call fails (HylaFAX sleeps before trying again), then is sent."""
    server = await FakeHylaFax(
        script=(("SLEEPING", "No carrier detected", 1), ("DONE", "", 2))
    ).start()
    try:
        yield server
    finally:
        await server.stop()


# A throwaway HylaFAX server: Debian's `hylafax-server` (faxq and hfaxd) on a spool of its own (a
# copy of /var/spool/hylafax with /etc/hylafax as its etc/), hfaxd's client protocol on 127.0.0.1
# and a free port, one user with a password in hosts.hfaxd. There is no modem: jobs are accepted
# and queued (READY), then FAILED by faxq when their kill time passes. hfaxd chroots into the
# spool and both daemons switch to the fax user (the spool's owner), so this needs root, as
# `make test` has on the test machine. A missing package fails the tests; nothing is skipped.

SKELETON = Path("/var/spool/hylafax")
CONFIG = Path("/etc/hylafax")
FAXQ = "/usr/sbin/faxq"
HFAXD = "/usr/sbin/hfaxd"
HYLAFAX_USER = "switchboard"


@dataclass
class HylaFaxServer:
    password: str = "fax-secret"
    spool: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sb-hylafax-")))
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> HylaFaxServer:
        for program in (FAXQ, HFAXD):
            if not os.access(program, os.X_OK):
                raise RuntimeError(
                    f"{program} is missing: install Debian's hylafax-server (make system-deps)"
                )
        if os.geteuid() != 0:
            raise RuntimeError("hfaxd chroots into its spool: the HylaFAX tests must run as root")
        self.spool.chmod(0o755)
        subprocess.run(["cp", "-a", f"{SKELETON}/.", str(self.spool)], check=True)
        subprocess.run(["cp", "-a", f"{CONFIG}/.", str(self.spool / "etc")], check=True)
        fax_user = pwd.getpwuid((SKELETON / "sendq").stat().st_uid)
        digest = (
            subprocess.run(
                ["openssl", "passwd", "-6", "-stdin"],
                input=self.password.encode(),
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .strip()
        )
        hosts = self.spool / "etc" / "hosts.hfaxd"
        hosts.write_text(f"^{HYLAFAX_USER}@(localhost|127\\.0\\.0\\.1)$:1002:{digest}:\n")
        os.chown(hosts, fax_user.pw_uid, fax_user.pw_gid)
        hosts.chmod(0o600)
        # Each daemon in a session of its own, so stopping it also stops what it forked.
        self.processes.append(self._spawn([FAXQ, "-D", "-q", str(self.spool)], "faxq"))
        self._wait(lambda: (self.spool / "FIFO").exists(), "faxq's FIFO")
        self.processes.append(
            self._spawn(
                [HFAXD, "-d", "-q", str(self.spool), "-l", "127.0.0.1", "-i", str(self.port)],
                "hfaxd",
            )
        )
        self._wait(self._greets, f"hfaxd on port {self.port}")
        return self

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.spool / "log" / f"{name}.out").open("wb")
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        for _ in range(200):
            if ready():
                return
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited ({process.returncode})")
            time.sleep(0.05)
        raise RuntimeError(f"HylaFAX did not come up: no {what}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                return s.recv(200).startswith(b"220 ")
        except OSError:
            return False

    def stop(self) -> None:
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.processes.clear()
        shutil.rmtree(self.spool, ignore_errors=True)

    def job(self, job_id: str) -> dict[str, str]:
        """The job's queue file (sendq while queued, doneq when finished), as faxq keeps it."""
        for queue in ("sendq", "doneq"):
            qfile = self.spool / queue / f"q{job_id}"
            if qfile.exists():
                entries = (line.partition(":") for line in qfile.read_text().splitlines())
                return {k: v for k, _, v in entries} | {"queue": queue}
        raise AssertionError(f"HylaFAX has no job {job_id}")

    def document(self, job: dict[str, str]) -> bytes:
        """The document a job sends: its `tiff:`/`pdf:` entry names a file in docq."""
        entry = job.get("tiff") or job.get("pdf") or ""
        name = entry.split(":")[-1]
        assert name.startswith("docq/"), job
        return (self.spool / name).read_bytes()


@pytest.fixture
def hylafax_server() -> Iterator[HylaFaxServer]:
    server = HylaFaxServer()
    try:
        yield server.start()
    finally:
        server.stop()
