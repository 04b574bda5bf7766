"""CaseService over gRPC: validates requests, scopes them to the caller's tenant, calls the views."""

from __future__ import annotations

from switchboard.case.pagination import CaseQuery, PageTokens
from switchboard.case.views import CaseViews
from switchboard.core.errors import InvalidArgument
from switchboard.core.grpc import principal, require
from switchboard.v1 import case_pb2, case_pb2_grpc

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class CaseServicer(case_pb2_grpc.CaseServiceServicer):
    def __init__(self, views: CaseViews, tokens: PageTokens) -> None:
        self.views = views
        self.tokens = tokens

    async def GetCase(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "case_id")
        return await self.views.get_case(tenant, request.case_id)

    async def ListCases(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        page_size = request.page_size or DEFAULT_PAGE_SIZE
        if request.status not in case_pb2.CaseStatus.values():
            raise InvalidArgument("status", f"{request.status} is not a case status")
        query = CaseQuery(tenant, request.status, request.contact_id, request.customer_id)
        after = self.tokens.decode(request.page_token, query) if request.page_token else None
        cases, next_cursor = await self.views.list_cases(query, page_size, after)
        return case_pb2.ListCasesResponse(
            cases=cases,
            next_page_token=self.tokens.encode(query, next_cursor) if next_cursor else "",
        )
