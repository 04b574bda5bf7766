"""A minimal client for HylaFAX's client protocol (hfaxd, TCP port 4559).

The protocol is FTP-like (RFC 959 replies, passive data connections) with job commands:
USER/PASS, TYPE I, FORM TIFF|PDF, PASV + STOT to upload the document to a temporary file, JNEW,
JPARM to set the sender, the kill time (LASTTIME), the tries, the dial string and the document,
JSUBM to submit; JOB + JPARM STATE/STATUS/TOTTRIES to ask about a job.

What hfaxd 6.0 answers (checked against Debian's hylafax-server in the tests): a JPARM query is
`213 <value>` (`213 READY`, `213 Kill time expired`); a job submitted without LASTTIME gets a kill
time in 1970, so faxq refuses it (`460 Failed to submit job 1: ... scheduler NAK'd request`); STOT
names the file after FORM (`150 FILE: /tmp/doc1.tif ...`), PostScript unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

_PASV = re.compile(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")
_FILE = re.compile(r"FILE:\s*(\S+?)\)?\.?(?:\s|$)")
_JOBID = re.compile(r"jobid:\s*(\d+)", re.IGNORECASE)
_STATES = frozenset(
    {"SUSPENDED", "PENDING", "SLEEPING", "BLOCKED", "READY", "ACTIVE", "DONE", "FAILED"}
)


class HylaFaxError(Exception):
    """The server refused a command (code and text kept) or the connection failed."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Reply:
    code: int
    text: str


@dataclass(frozen=True)
class HylaFaxConfig:
    host: str
    port: int = 4559
    user: str = "switchboard"
    password: str = ""
    timeout: float = 30.0
    kill_minutes: int = 179  # how long HylaFAX keeps trying (JPARM LASTTIME; sendfax's default)
    max_tries: int = 3  # HylaFAX's own attempts at the call (JPARM MAXTRIES)


@dataclass(frozen=True)
class JobStatus:
    """A job as hfaxd reports it: its state, the reason of the last failure, the tries made."""

    state: str
    status: str = ""
    tries: int = 0


def last_time(minutes: int) -> str:
    """HylaFAX's LASTTIME, DDHHMM from now."""
    minutes = max(1, minutes)
    days, rest = divmod(minutes, 24 * 60)
    if days > 99:
        raise HylaFaxError(f"a kill time of {minutes} minutes is too long")
    return f"{days:02d}{rest // 60:02d}{rest % 60:02d}"


class HylaFaxClient:
    def __init__(self, config: HylaFaxConfig) -> None:
        self.config = config
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> HylaFaxClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        c = self.config
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(c.host, c.port), c.timeout
            )
        except (OSError, TimeoutError) as exc:
            raise HylaFaxError(f"cannot connect to HylaFAX at {c.host}:{c.port}: {exc}") from exc
        await self._expect(220)
        reply = await self.command(f"USER {c.user}")
        if reply.code == 331:
            reply = await self.command(f"PASS {c.password}")
        if reply.code != 230:
            raise HylaFaxError(f"login refused: {reply.code} {reply.text}", reply.code)
        await self._ok("TYPE I", 200)

    async def close(self) -> None:
        if self._writer is None:
            return
        with contextlib.suppress(Exception):
            self._writer.write(b"QUIT\r\n")
            await self._writer.drain()
            await asyncio.wait_for(self._read_reply(), 2)
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()
        self._writer = self._reader = None

    async def _read_reply(self) -> Reply:
        assert self._reader is not None
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self._reader.readline(), self.config.timeout)
            if not raw:
                raise HylaFaxError("HylaFAX closed the connection")
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            lines.append(line)
            # The last line of a (multi-line) reply is "NNN text"; others are "NNN-text" or free.
            if len(line) >= 4 and line[:3].isdigit() and line[3] == " ":
                return Reply(
                    int(line[:3]), "\n".join(lines)[4:] if len(lines) == 1 else "\n".join(lines)
                )
            if len(line) == 3 and line.isdigit():
                return Reply(int(line), "")

    async def command(self, line: str) -> Reply:
        if self._writer is None:
            raise HylaFaxError("not connected")
        if "\r" in line or "\n" in line:
            raise HylaFaxError("a command must be one line")
        self._writer.write(line.encode() + b"\r\n")
        await self._writer.drain()
        return await self._read_reply()

    async def _expect(self, *codes: int) -> Reply:
        reply = await self._read_reply()
        if reply.code not in codes:
            raise HylaFaxError(f"unexpected reply {reply.code} {reply.text}", reply.code)
        return reply

    async def _ok(self, line: str, *codes: int) -> Reply:
        reply = await self.command(line)
        if reply.code not in codes:
            verb = line.split(" ", 1)[0]
            raise HylaFaxError(f"{verb} refused: {reply.code} {reply.text}", reply.code)
        return reply

    async def store_temp(self, data: bytes) -> str:
        """Upload `data` with PASV + STOT; return the server's temporary file name."""
        await self._ok("FORM PDF" if data[:5] == b"%PDF-" else "FORM TIFF", 200)
        reply = await self._ok("PASV", 227)
        match = _PASV.search(reply.text)
        if not match:
            raise HylaFaxError(f"cannot read the PASV reply: {reply.text}")
        numbers = [int(n) for n in match.groups()]
        host = ".".join(str(n) for n in numbers[:4])
        if host in ("0.0.0.0", ""):
            host = self.config.host
        port = numbers[4] * 256 + numbers[5]
        _, data_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), self.config.timeout
        )
        try:
            opening = await self.command("STOT")
            if opening.code not in (125, 150):
                raise HylaFaxError(f"STOT refused: {opening.code} {opening.text}", opening.code)
            data_writer.write(data)
            await data_writer.drain()
        finally:
            data_writer.close()
            with contextlib.suppress(Exception):
                await data_writer.wait_closed()
        done = await self._expect(226, 250)
        for text in (opening.text, done.text):
            found = _FILE.search(text)
            if found:
                return found.group(1).rstrip(").")
        raise HylaFaxError(f"the server did not name the stored file: {done.text}")

    async def submit(self, document: bytes, dial: str, sender: str = "switchboard") -> str:
        """Send `document` (TIFF or PDF) to `dial`; return the job id once it is submitted."""
        if not re.fullmatch(r"\+?[0-9]{3,20}", dial):
            raise HylaFaxError(f"{dial!r} is not a number to dial")
        path = await self.store_temp(document)
        reply = await self._ok("JNEW", 200)
        match = _JOBID.search(reply.text)
        if not match:
            raise HylaFaxError(f"cannot read the job id in: {reply.text}")
        job = match.group(1)
        await self._ok(f'JPARM FROMUSER "{sender}"', 213, 200)
        await self._ok(f"JPARM LASTTIME {last_time(self.config.kill_minutes)}", 213, 200)
        await self._ok(f"JPARM MAXTRIES {self.config.max_tries}", 213, 200)
        await self._ok(f'JPARM DIALSTRING "{dial}"', 213, 200)
        await self._ok(f"JPARM DOCUMENT {path}", 200, 213)
        await self._ok("JSUBM", 200)
        return job

    async def job_parameter(self, name: str) -> str:
        """A parameter of the current job: hfaxd answers `213 <value>`."""
        reply = await self._ok(f"JPARM {name}", 213)
        return reply.text.strip()

    async def job_status(self, job: str) -> JobStatus:
        """The job's state (SUSPENDED, PENDING, SLEEPING, BLOCKED, READY, ACTIVE, DONE, FAILED),
        hfaxd's text for the last failure, and the tries made so far."""
        await self._ok(f"JOB {job}", 200)
        state = (await self.job_parameter("STATE")).upper()
        if state not in _STATES:
            raise HylaFaxError(f"cannot read the state of job {job}: {state!r}")
        status = await self.job_parameter("STATUS")
        tries = await self.job_parameter("TOTTRIES")
        return JobStatus(state, status, int(tries) if tries.isdigit() else 0)
