"""CaseService RPCs of the customer portal (a mixin of the CaseServicer, which sets
``servicer.portal``). A customer's calls take the customer from the token's subject, never from
the request, so no request can name another customer's case."""

from __future__ import annotations

from switchboard.case.portal import Portal
from switchboard.core.errors import InvalidArgument
from switchboard.core.grpc import principal, require
from switchboard.v1 import case_pb2

MAX_PAGE_SIZE = 200
LANGUAGES = ("ko", "zh", "ja", "en")


class PortalRpcs:
    portal: Portal

    async def SendPortalLink(self, request, context):  # type: ignore[no-untyped-def]
        tenant = principal().tenant
        require(request, "email", "portal_url")
        if len(request.email) > 254:
            raise InvalidArgument("email", "is longer than 254 characters")
        language = request.language if request.language in LANGUAGES else "en"
        await self.portal.send_link(tenant, request.email, request.portal_url, language)
        return case_pb2.SendPortalLinkResponse()

    async def ListMyCases(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
        cases = await self.portal.my_cases(p.tenant, p.subject, request.page_size or 50)
        return case_pb2.ListCasesResponse(cases=cases)

    async def GetMyCase(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        require(request, "case_id")
        return await self.portal.my_case(p.tenant, p.subject, request.case_id)

    async def ListCatalogue(self, request, context):  # type: ignore[no-untyped-def]
        items = self.portal.catalogue(principal().tenant)
        return case_pb2.ListCatalogueResponse(items=items)

    async def CheckCatalogueRequest(self, request, context):  # type: ignore[no-untyped-def]
        require(request, "template")
        language = request.language if request.language in LANGUAGES else "en"
        return self.portal.check_request(
            principal().tenant, request.template, dict(request.values), language
        )

    async def SendPortalCode(self, request, context):  # type: ignore[no-untyped-def]
        require(request, "reference")
        if request.channel not in ("", "email"):
            raise InvalidArgument("channel", "codes are sent by email only")
        language = request.language if request.language in LANGUAGES else "en"
        await self.portal.send_code(principal().tenant, request.reference[:64], language)
        return case_pb2.SendPortalCodeResponse()

    async def VerifyPortalCode(self, request, context):  # type: ignore[no-untyped-def]
        link = await self.portal.verify_code(
            principal().tenant, request.reference[:64], request.code[:16]
        )
        return case_pb2.VerifyPortalCodeResponse(link=link)

    async def RecordSuggestionView(self, request, context):  # type: ignore[no-untyped-def]
        p = principal()
        await self.portal.record_suggestion(
            p.tenant, p.subject, request.draft_id, request.event, request.article_id[:64]
        )
        return case_pb2.SuggestionViewResponse()
