"""CaseService over gRPC: validates requests, scopes them to the caller's tenant, calls the views
and commands."""

from __future__ import annotations

from switchboard.case.commands import CaseCommands
from switchboard.case.entrypoints.kb_reports_rpc import KnowledgeReportRpcs
from switchboard.case.entrypoints.portal_rpc import PortalRpcs
from switchboard.case.pagination import CaseQuery, PageTokens
from switchboard.case.sla.live import LivePolicies
from switchboard.case.views import CaseViews
from switchboard.core.errors import InvalidArgument
from switchboard.core.grpc import acting_for, principal, require
from switchboard.v1 import case_pb2, case_pb2_grpc

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def _enum(value: int, enum: type, field: str) -> None:
    if value not in enum.values():  # type: ignore[attr-defined]
        raise InvalidArgument(field, f"{value} is not a valid value")


class CaseServicer(KnowledgeReportRpcs, PortalRpcs, case_pb2_grpc.CaseServiceServicer):
    def __init__(
        self, views: CaseViews, tokens: PageTokens, commands: CaseCommands | None = None
    ) -> None:
        self.views = views
        self.tokens = tokens
        self.commands = commands
        self.live_policies: LivePolicies | None = None

    def _commands(self) -> CaseCommands:
        assert self.commands is not None, "CaseServicer built without commands"
        return self.commands

    def _live(self) -> LivePolicies:
        assert self.live_policies is not None, "CaseServicer built without its policies"
        return self.live_policies

    async def GetTenantPolicy(self, request, context):  # type: ignore[no-untyped-def]
        text, version = self._live().current(principal().tenant)
        return case_pb2.TenantPolicy(yaml=text, version=version)

    async def ApplyTenantPolicy(self, request, context):  # type: ignore[no-untyped-def]
        version = request.version if request.HasField("version") else None
        caller = principal()
        text, version = await self._live().apply(
            caller.tenant, request.yaml, request.dry_run, version, caller.subject
        )
        return case_pb2.TenantPolicy(yaml=text, version=version)

    async def GetCase(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "case_id")
        return await self.views.get_case(tenant, request.case_id)

    async def ListCases(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        _enum(request.status, case_pb2.CaseStatus, "status")
        _enum(request.case_type, case_pb2.CaseType, "case_type")
        _enum(request.priority, case_pb2.CasePriority, "priority")
        _enum(request.order, case_pb2.CaseOrder, "order")
        query = CaseQuery(
            tenant,
            request.status,
            request.contact_id,
            request.customer_id,
            request.case_type,
            request.priority,
            request.queue,
            request.assigned_agent_id,
            request.order,
        )
        after = self.tokens.decode(request.page_token, query) if request.page_token else None
        cases, next_cursor = await self.views.list_cases(query, page_size, after)
        return case_pb2.ListCasesResponse(
            cases=cases,
            next_page_token=self.tokens.encode(query, next_cursor) if next_cursor else "",
        )

    async def CreateCase(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        case_id = await self._commands().create_case(p.tenant, p.subject, request)
        return await self.views.get_case(p.tenant, case_id)

    async def UpdateCaseStatus(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id", "status")
        case_id = await self._commands().update_status(
            p.tenant, p.subject, request.case_id, request.status, request.reason
        )
        return await self.views.get_case(p.tenant, case_id)

    async def ReviewClosure(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id")
        case_id = await self._commands().review_closure(
            p.tenant, p.subject, request.case_id, request.approve, request.note
        )
        return await self.views.get_case(p.tenant, case_id)

    async def ConfirmClosure(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id")
        case_id = await self._commands().confirm_closure(
            p.tenant, p.subject, request.case_id, request.confirmed, request.comment
        )
        return await self.views.get_case(p.tenant, case_id)

    async def AddNote(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id", "text")
        note = await self._commands().add_note(p.tenant, p.subject, request.case_id, request.text)
        result = case_pb2.CaseNote(note_id=note.id, author=note.author, text=note.text)
        result.created_at.FromDatetime(note.created_at)
        return result

    async def AssignCase(self, request, context):  # type: ignore[no-untyped-def]
        require(request, "case_id", "agent_id")
        p = acting_for(request.agent_id)  # an agent takes a case for itself only
        case_id = await self._commands().assign(
            p.tenant, p.subject, request.case_id, request.agent_id
        )
        return await self.views.get_case(p.tenant, case_id)

    async def SetCasePriority(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id", "priority")
        case_id = await self._commands().set_priority(
            p.tenant, p.subject, request.case_id, request.priority
        )
        return await self.views.get_case(p.tenant, case_id)

    async def MergeCustomers(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "target_customer_id", "source_customer_id")
        customer_id = await self._commands().merge(
            p.tenant, p.subject, request.target_customer_id, request.source_customer_id
        )
        history = await self.views.customer_history(p.tenant, customer_id, 1)
        return history.customer

    async def SplitCustomer(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "customer_id")
        original, new = await self._commands().split(
            p.tenant,
            p.subject,
            request.customer_id,
            request.identities,
            request.case_ids,
            request.display_name,
        )
        return case_pb2.SplitCustomerResponse(
            original=(await self.views.customer_history(p.tenant, original, 1)).customer,
            split=(await self.views.customer_history(p.tenant, new, 1)).customer,
        )

    async def EraseCustomer(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "customer_id")
        customer_id, destroyed = await self._commands().erase(
            p.tenant, p.subject, request.customer_id
        )
        return case_pb2.EraseCustomerResponse(customer_id=customer_id, keys_destroyed=destroyed)

    async def GetAuditTrail(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        return await self.views.audit_trail(tenant, request.case_id, request.customer_id)

    async def GetCustomerHistory(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "customer_id")
        if request.max_cases < 0 or request.max_cases > MAX_PAGE_SIZE:
            raise InvalidArgument("max_cases", f"must be between 0 and {MAX_PAGE_SIZE}")
        return await self.views.customer_history(
            tenant, request.customer_id, request.max_cases or DEFAULT_PAGE_SIZE
        )
