"""EmailService: what each mailbox is doing, and why one is unhealthy."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from switchboard.core.grpc import principal
from switchboard.v1 import email_pb2, email_pb2_grpc


class EmailServicer(email_pb2_grpc.EmailServiceServicer):
    def __init__(
        self, statuses: Callable[[str], tuple[list[email_pb2.MailboxStatus], bool]]
    ) -> None:
        self.statuses = statuses

    async def ListMailboxes(
        self, request: email_pb2.ListMailboxesRequest, context: grpc.aio.ServicerContext
    ) -> email_pb2.ListMailboxesResponse:
        # Only the caller's tenant's mailboxes. Their last error names the mail server, its port
        # and folder: the role table lets only those who run the mailboxes ask.
        mailboxes, serving = self.statuses(principal().tenant)
        return email_pb2.ListMailboxesResponse(mailboxes=mailboxes, serving=serving)


def registration(servicer: EmailServicer) -> tuple[object, EmailServicer, str]:
    return (
        email_pb2_grpc.add_EmailServiceServicer_to_server,
        servicer,
        email_pb2.DESCRIPTOR.services_by_name["EmailService"].full_name,
    )
