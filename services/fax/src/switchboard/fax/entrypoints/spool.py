"""The watched spool directory: a fax server (or the receive hook, as a fallback) drops files in.

Writers drop atomically (write `.name.tmp`, then rename); a file is taken once it has not
changed for a moment. An optional sidecar `<file>.json` carries the origin (caller id, CSID...).
A file is removed only after JetStream has acknowledged it; one that is too big to take in is
moved to `rejected/` beside a `.reason` file, never deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from google.protobuf import json_format

from switchboard.core import tasks
from switchboard.fax.intake import fax_id_for
from switchboard.v1 import fax_pb2

logger = logging.getLogger(__name__)

Accept = Callable[[str, bytes, fax_pb2.FaxOrigin], Awaitable[object]]


def write_atomically(directory: Path, name: str, data: bytes, origin: fax_pb2.FaxOrigin) -> Path:
    """Drop a fax into a spool directory so a watcher never sees it half-written."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    sidecar = directory / f"{name}.json"
    for path, content in (
        (sidecar, json_format.MessageToJson(origin).encode()),
        (target, data),
    ):
        tmp = directory / f".{path.name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(path)
    return target


class SpoolWatcher:
    def __init__(
        self,
        directory: Path,
        accept: Accept,
        poll_seconds: float = 1.0,
        settle_seconds: float = 0.5,
        hard_limit_bytes: int = 100 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.accept = accept
        self.poll_seconds = poll_seconds
        self.settle_seconds = settle_seconds
        self.hard_limit_bytes = hard_limit_bytes
        self._task: asyncio.Task[None] | None = None
        self.taken = 0

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.create_task(self._run(), name="fax-spool")

    async def stop(self) -> None:
        await tasks.cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                await self.scan()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("spool scan of %s failed", self.directory)
            await asyncio.sleep(self.poll_seconds)

    def _candidates(self) -> list[Path]:
        now = time.time()
        found = []
        for path in sorted(self.directory.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix in (".json", ".tmp"):
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime >= self.settle_seconds:
                    found.append(path)
        return found

    async def scan(self) -> int:
        """Take every settled file once; return how many were accepted."""
        taken = 0
        for path in self._candidates():
            sidecar = path.with_name(path.name + ".json")
            if path.stat().st_size > self.hard_limit_bytes:
                self._reject(
                    path, sidecar, f"{path.stat().st_size:,} bytes is over the spool's hard limit"
                )
                continue
            data = path.read_bytes()
            origin = fax_pb2.FaxOrigin()
            if sidecar.exists():
                try:
                    json_format.Parse(sidecar.read_text(), origin, ignore_unknown_fields=True)
                except (json_format.ParseError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                    logger.warning("ignoring unreadable sidecar %s: %s", sidecar.name, exc)
            if origin.intake == fax_pb2.FAX_INTAKE_UNSPECIFIED:
                origin.intake = fax_pb2.FAX_INTAKE_SPOOL
            origin.reference = origin.reference or path.name
            origin.filename = origin.filename or path.name
            fax_id = fax_id_for("spool", origin.reference, data)
            try:
                await self.accept(fax_id, data, origin)
            except Exception as exc:  # NATS down, say: the file stays and is tried next scan
                logger.warning("spool file %s not accepted yet: %s", path.name, exc)
                return taken
            path.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)
            taken += 1
            self.taken += 1
        return taken

    def _reject(self, path: Path, sidecar: Path, reason: str) -> None:
        rejected = self.directory / "rejected"
        rejected.mkdir(exist_ok=True)
        path.rename(rejected / path.name)
        if sidecar.exists():
            sidecar.rename(rejected / sidecar.name)
        (rejected / f"{path.name}.reason").write_text(reason + "\n")
        logger.error("spool file %s moved to rejected/: %s", path.name, reason)
