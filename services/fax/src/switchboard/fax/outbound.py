"""Agents' replies by fax: OutboundFax -> a rendered document -> HylaFAX -> DeliveryStatus.

The rendered document is kept in the object store (so a reply is never lost, sent or not).
Sending is tried a bounded number of times (each failure is a RETRYING status), then FAILED;
a submitted job is followed until HylaFAX reports it DONE (DELIVERED) or FAILED, or until its
customer is erased (CustomerErased: the job is purged, and nothing more is reported of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from switchboard.fax.adapters.hylafax import HylaFaxClient, HylaFaxConfig, HylaFaxError
from switchboard.fax.adapters.jobs import Job, Jobs
from switchboard.fax.adapters.objects import Objects
from switchboard.fax.domain import identity, render
from switchboard.fax.notifier import FaxNotifier
from switchboard.v1 import case_events_pb2, events_pb2

logger = logging.getLogger(__name__)

SENT = events_pb2.DELIVERY_STATE_SENT
DELIVERED = events_pb2.DELIVERY_STATE_DELIVERED
RETRYING = events_pb2.DELIVERY_STATE_RETRYING
FAILED = events_pb2.DELIVERY_STATE_FAILED


@dataclass(frozen=True)
class ReplyConfig:
    bucket: str
    font: str
    format: str = "tiff"
    hylafax: HylaFaxConfig | None = None
    attempts: int = 3
    retry_seconds: float = 1.0
    poll_seconds: float = 10.0
    poll_limit: int = 360
    region: str = "KR"


class FaxSender:
    def __init__(
        self,
        objects: Objects,
        notifier: FaxNotifier,
        config: ReplyConfig,
        client_factory: Callable[[HylaFaxConfig], HylaFaxClient] = HylaFaxClient,
        jobs: Jobs | None = None,
    ) -> None:
        self.objects = objects
        self.jobs = jobs  # durable: a restart neither re-sends nor stops following
        self.notifier = notifier
        self.config = config
        self.client_factory = client_factory
        # The jobs followed, with the (tenant, contact) each reply is to.
        self._follow: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._sent: dict[str, str] = {}  # command id -> HylaFAX job id (re-delivery: not re-sent)

    async def close(self) -> None:
        for task in list(self._follow):
            task.cancel()
        for task in list(self._follow):
            with contextlib.suppress(BaseException):
                await task

    def render(self, command: events_pb2.OutboundFax) -> tuple[bytes, str, str]:
        """The reply as document bytes, extension and content type."""
        header = render.reply_header(command.case_reference, command.to_number, datetime.now(UTC))
        pages = render.render_pages(command.text, header, self.config.font)
        if self.config.format == "pdf":
            return render.to_pdf(pages), "pdf", "application/pdf"
        return render.to_tiff(pages, "group4"), "tif", "image/tiff"

    async def resume(self) -> int:
        """Follow again the jobs submitted before a restart that have no final state yet."""
        if self.jobs is None or self.config.hylafax is None:
            return 0
        pending = await self.jobs.unfinished()
        for record in pending:
            command = events_pb2.OutboundFax.FromString(record.command)
            self._sent[command.meta.event_id] = record.job
            self._start_following(
                command, record.job, record.attempt, record.tries, record.revision
            )
        return len(pending)

    def _start_following(
        self,
        command: events_pb2.OutboundFax,
        job: str,
        attempt: int,
        tries: int = 0,
        revision: int = 0,
    ) -> None:
        task = asyncio.create_task(self._follow_job(command, job, attempt, tries, revision))
        self._follow[task] = (command.meta.tenant, command.contact_id)
        task.add_done_callback(lambda t: self._follow.pop(t, None))

    async def _record(
        self, command: events_pb2.OutboundFax, job: str, attempt: int, tries: int, final: bool
    ) -> int:
        """Record a submitted job; its revision (0 without a jobs bucket)."""
        if self.jobs is None:
            return 0
        record = Job(command.SerializeToString(), job, attempt, tries, final)
        return await self.jobs.put(command.meta.event_id, record)

    async def _still_followed(self, command: events_pb2.OutboundFax, revision: int) -> bool:
        """Whether the job is still there as last recorded (not purged by its customer's
        erasure, here or on another replica)."""
        if self.jobs is None or not revision:
            return True
        found = await self.jobs.get(command.meta.event_id)
        return found is not None and found.revision == revision

    async def _update(
        self,
        command: events_pb2.OutboundFax,
        job: str,
        attempt: int,
        tries: int,
        final: bool,
        revision: int,
    ) -> int | None:
        """Record the job's progress over `revision`; its new revision, or None when the job was
        purged meanwhile (it is not written back)."""
        if self.jobs is None or not revision:
            return revision
        record = Job(command.SerializeToString(), job, attempt, tries, final)
        return await self.jobs.replace(command.meta.event_id, record, revision)

    async def on_customer_erased(self, event: case_events_pb2.CustomerErased) -> None:
        """Forget the erased customer's replies: purge their jobs (number and text), and stop
        following them here (another replica following one stops at its next change)."""
        tenant, contacts = event.meta.tenant, frozenset(event.contact_ids)
        stopping = [t for t, (te, c) in self._follow.items() if te == tenant and c in contacts]
        await self._stop(stopping)
        if self.jobs is not None:
            purged = await self.jobs.forget_contacts(tenant, contacts)
            if purged:
                logger.info("purged %d fax reply jobs of an erased customer", purged)

    @staticmethod
    async def _stop(tasks: Iterable[asyncio.Task[None]]) -> None:
        tasks = list(tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def on_outbound_fax(self, command: events_pb2.OutboundFax) -> None:
        command_id = command.meta.event_id
        if command_id in self._sent:
            return
        if self.jobs is not None and await self.jobs.get(command_id) is not None:
            return  # submitted before a restart: it is followed by `resume`
        number = identity.to_e164(command.to_number, self.config.region)
        if not number:
            await self.notifier.delivery(
                command, FAILED, f"to_number {command.to_number!r} is not a valid phone number", 1
            )
            return
        loop = asyncio.get_running_loop()
        data, ext, content_type = await loop.run_in_executor(None, self.render, command)
        ref = await self.objects.put(
            self.config.bucket,
            f"{command.meta.tenant}/outbound/{command_id}.{ext}",
            data,
            f"reply-{command.case_reference or command_id[:8]}.{ext}",
            content_type,
        )
        if self.config.hylafax is None:
            await self.notifier.delivery(
                command,
                FAILED,
                "no fax server is configured (FAX_HYLAFAX_HOST); the rendered reply is kept "
                f"at {ref.bucket}/{ref.object_name}",
                1,
            )
            return
        dial = number.lstrip("+")
        for attempt in range(1, self.config.attempts + 1):
            try:
                async with self.client_factory(self.config.hylafax) as client:
                    job = await client.submit(data, dial)
            except (HylaFaxError, OSError, TimeoutError) as exc:
                last = attempt == self.config.attempts
                await self.notifier.delivery(
                    command, FAILED if last else RETRYING, f"HylaFAX: {exc}", attempt
                )
                if last:
                    return
                await asyncio.sleep(self.config.retry_seconds * attempt)
                continue
            self._sent[command_id] = job
            revision = await self._record(command, job, attempt, 0, final=False)
            await self.notifier.delivery(
                command, SENT, f"HylaFAX job {job} submitted to {number}", attempt, job
            )
            self._start_following(command, job, attempt, 0, revision)
            return

    async def _follow_job(
        self,
        command: events_pb2.OutboundFax,
        job: str,
        attempt: int,
        tries: int = 0,
        revision: int = 0,
    ) -> None:
        """Report what hfaxd says of the job: RETRYING for each of HylaFAX's failed calls (with its
        reason), DELIVERED when it is DONE, FAILED (with the reason) when HylaFAX gives up; stop
        without a word once the job was purged (its customer erased)."""
        assert self.config.hylafax is not None
        for _ in range(self.config.poll_limit):
            await asyncio.sleep(self.config.poll_seconds)
            try:
                async with self.client_factory(self.config.hylafax) as client:
                    job_status = await client.job_status(job)
            except (HylaFaxError, OSError, TimeoutError) as exc:
                logger.warning("asking HylaFAX about job %s failed: %s", job, exc)
                continue
            reason = f": {job_status.status}" if job_status.status else ""
            final = job_status.state in ("DONE", "FAILED")
            if (final or job_status.tries > tries) and not await self._still_followed(
                command, revision
            ):
                logger.info("fax job %s: its customer was erased; no longer followed", job)
                return
            if job_status.state == "DONE":
                await self.notifier.delivery(
                    command, DELIVERED, f"HylaFAX job {job} done{reason}", attempt, job
                )
                await self._update(command, job, attempt, job_status.tries, True, revision)
                return
            if job_status.state == "FAILED":
                await self.notifier.delivery(
                    command, FAILED, f"HylaFAX job {job} failed{reason}", attempt, job
                )
                await self._update(command, job, attempt, job_status.tries, True, revision)
                return
            if job_status.tries > tries:
                tries = job_status.tries
                updated = await self._update(command, job, attempt, tries, False, revision)
                if updated is None:
                    logger.info("fax job %s: its customer was erased; no longer followed", job)
                    return
                revision = updated
                await self.notifier.delivery(
                    command,
                    RETRYING,
                    f"HylaFAX job {job} {job_status.state.lower()} after try {tries}{reason}",
                    attempt,
                    job,
                )
        logger.warning("stopped following HylaFAX job %s: no final state", job)
