"""Who may call what: the one table of every RPC's allowed roles and partner scopes.

The gRPC server interceptor (switchboard.core.grpc) looks up each call's full method name here
and refuses with PERMISSION_DENIED a method with no rule or a caller the rule does not admit.
A rule admits a caller that holds one of its `roles` (for anyone), one of its `own` roles (only
for itself: the servicer names the agent the call acts for, `switchboard.core.grpc.acting_for`),
or the partner role together with one of its `scopes`, granted explicitly in the token.

Rules named ``<method>:<sub-action>`` guard a part of an RPC that needs more than the RPC itself
(publishing an article); the servicer checks them with `switchboard.core.grpc.require_rule`.
docs/security.md shows this table; a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from switchboard.core.auth import Principal

AGENT = "agent"
TEAM_LEAD = "team_lead"
SUPERVISOR = "supervisor"
QA = "qa"
ADMIN = "admin"
PARTNER = "partner"
SERVICE = "service"
# A customer signed in to the portal: the token's subject is the customer id; it may read its own
# cases and the published knowledge base, nothing else.
CUSTOMER = "customer"

ROLES = (AGENT, TEAM_LEAD, SUPERVISOR, QA, ADMIN, PARTNER, SERVICE, CUSTOMER)

# Partner scopes: a partner token can do nothing but what these grant.
SCOPES = {
    "cases:read": "read cases, their customers' histories",
    "cases:write": "open, update, annotate and assign cases",
    "customers:write": "merge and split customers",
    "audit:read": "read audit trails",
    "kb:read": "search and read the knowledge base",
    "kb:write": "write knowledge-base drafts",
    "kb:publish": "review knowledge-base articles: publish, retire, send back",
    "reports:read": "reports and queue statistics",
    "routing:read": "agents, routing decisions, contacts' positions",
    "routing:act-as-agent": "sign agents in and out, take their offers and act on them",
}


@dataclass(frozen=True)
class Rule:
    roles: frozenset[str] = frozenset()
    own: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()

    def for_anyone(self, p: Principal) -> bool:
        """The caller may make this call for any agent of its tenant."""
        if p.roles & self.roles:
            return True
        return PARTNER in p.roles and bool(p.scopes & self.scopes)

    def admits(self, p: Principal) -> bool:
        """The caller may make this call at all (perhaps only for itself)."""
        return self.for_anyone(p) or bool(p.roles & self.own)

    def may_act_for(self, p: Principal, agent_id: str) -> bool:
        return self.for_anyone(p) or (bool(p.roles & self.own) and p.subject == agent_id)


def _rule(*roles: str, own: tuple[str, ...] = (), scopes: tuple[str, ...] = ()) -> Rule:
    return Rule(frozenset(roles), frozenset(own), frozenset(scopes))


# People who take contacts at a desk: each may act for itself only, unless its rule says more.
DESK = (AGENT, TEAM_LEAD, SUPERVISOR)
# Everyone but partners, whose scopes say what they may do.
STAFF = (AGENT, TEAM_LEAD, SUPERVISOR, QA, ADMIN, SERVICE)
# Who manages other agents' work: assigns, transfers, changes presence.
MANAGING = (TEAM_LEAD, SUPERVISOR, ADMIN, SERVICE)

_CASE = "/switchboard.v1.CaseService/"
_ROUTER = "/switchboard.v1.RouterService/"
_ROUTER_ADMIN = "/switchboard.v1.RouterAdminService/"
_EMAIL = "/switchboard.v1.EmailService/"
_VOICE = "/switchboard.v1.VoiceService/"

RULES: dict[str, Rule] = {
    # ---- cases and customers
    _CASE + "GetCase": _rule(*STAFF, scopes=("cases:read",)),
    _CASE + "ListCases": _rule(*STAFF, scopes=("cases:read",)),
    _CASE + "GetCustomerHistory": _rule(*STAFF, scopes=("cases:read",)),
    _CASE + "CreateCase": _rule(AGENT, *MANAGING, scopes=("cases:write",)),
    _CASE + "UpdateCaseStatus": _rule(AGENT, *MANAGING, scopes=("cases:write",)),
    _CASE + "SetCasePriority": _rule(AGENT, *MANAGING, scopes=("cases:write",)),
    # A reviewer signs off (or rejects) an agent's resolution; the customer's answer to a
    # resolution is recorded by whoever hears it: an agent, a channel, a partner's portal.
    _CASE + "ReviewClosure": _rule(TEAM_LEAD, SUPERVISOR, ADMIN),
    _CASE + "ConfirmClosure": _rule(AGENT, *MANAGING, scopes=("cases:write",)),
    _CASE + "AddNote": _rule(*STAFF, scopes=("cases:write",)),
    # An agent takes a case for itself; those managing assign to anyone.
    _CASE + "AssignCase": _rule(*MANAGING, own=(AGENT,), scopes=("cases:write",)),
    _CASE + "MergeCustomers": _rule(SUPERVISOR, ADMIN, scopes=("customers:write",)),
    _CASE + "SplitCustomer": _rule(SUPERVISOR, ADMIN, scopes=("customers:write",)),
    _CASE + "EraseCustomer": _rule(ADMIN),
    _CASE + "GetAuditTrail": _rule(SUPERVISOR, QA, ADMIN, scopes=("audit:read",)),
    # ---- knowledge base
    _CASE + "SearchKnowledge": _rule(*STAFF, CUSTOMER, scopes=("kb:read",)),
    _CASE + "SuggestArticles": _rule(*STAFF, scopes=("kb:read",)),
    _CASE + "GetArticle": _rule(*STAFF, scopes=("kb:read",)),
    _CASE + "VoteArticle": _rule(
        AGENT, TEAM_LEAD, SUPERVISOR, QA, ADMIN, CUSTOMER, scopes=("kb:write",)
    ),
    _CASE + "CreateArticle": _rule(AGENT, TEAM_LEAD, SUPERVISOR, ADMIN, scopes=("kb:write",)),
    _CASE + "UpdateArticle": _rule(AGENT, TEAM_LEAD, SUPERVISOR, ADMIN, scopes=("kb:write",)),
    _CASE + "SetArticleState": _rule(
        AGENT, TEAM_LEAD, SUPERVISOR, ADMIN, scopes=("kb:write", "kb:publish")
    ),
    # Reviewing: publishing, retiring, and sending a version in review back to draft.
    _CASE + "SetArticleState:publish": _rule(SUPERVISOR, ADMIN, scopes=("kb:publish",)),
    _CASE + "ListArticles": _rule(*STAFF, scopes=("kb:read",)),
    _CASE + "ListArticleVersions": _rule(*STAFF, scopes=("kb:read",)),
    _CASE + "AddArticleAttachment": _rule(
        AGENT, TEAM_LEAD, SUPERVISOR, ADMIN, scopes=("kb:write",)
    ),
    _CASE + "GetArticleAttachment": _rule(*STAFF, scopes=("kb:read",)),
    _CASE + "DraftArticleFromCase": _rule(AGENT, TEAM_LEAD, SUPERVISOR, ADMIN),
    # ---- the customer portal: the chat service asks for a sign-in mail; a customer reads only
    # its own cases (the servicer takes the customer from the token)
    _CASE + "SendPortalLink": _rule(SERVICE),
    _CASE + "ListMyCases": _rule(CUSTOMER),
    _CASE + "GetMyCase": _rule(CUSTOMER),
    _CASE + "ListCatalogue": _rule(CUSTOMER),
    _CASE + "CheckCatalogueRequest": _rule(CUSTOMER),
    _CASE + "SendPortalCode": _rule(SERVICE),
    _CASE + "VerifyPortalCode": _rule(SERVICE),
    _CASE + "RecordSuggestionView": _rule(CUSTOMER),
    # ---- the admin console: the tenant's policies (business hours, SLA, templates)
    _CASE + "GetTenantPolicy": _rule(SUPERVISOR, ADMIN),
    _CASE + "ApplyTenantPolicy": _rule(ADMIN),
    # ---- reports and quality
    _CASE + "GetReport": _rule(TEAM_LEAD, SUPERVISOR, QA, ADMIN, SERVICE, scopes=("reports:read",)),
    _CASE + "SubmitQaScore": _rule(QA, SUPERVISOR, ADMIN),
    _CASE + "ListQaSamples": _rule(QA, SUPERVISOR, ADMIN),
    _CASE + "PutQaForm": _rule(QA, SUPERVISOR, ADMIN),
    _CASE + "ListQaForms": _rule(*STAFF),
    _CASE + "GetQaForm": _rule(*STAFF),
    # An evaluated agent sees and disputes its own evaluations; a second evaluator decides.
    _CASE + "ListQaEvaluations": _rule(QA, TEAM_LEAD, SUPERVISOR, ADMIN, own=(AGENT,)),
    _CASE + "DisputeQaEvaluation": _rule(own=DESK),
    _CASE + "DecideQaDispute": _rule(QA, SUPERVISOR, ADMIN),
    _CASE + "GetQaScorecard": _rule(QA, TEAM_LEAD, SUPERVISOR, ADMIN),
    # ---- an agent's own work: only the agent itself, the services that carry its calls
    # (voice gateway), and partners granted routing:act-as-agent; leads manage presence.
    _ROUTER + "SignIn": _rule(*MANAGING, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "SignOut": _rule(*MANAGING, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "SetPresence": _rule(*MANAGING, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "StreamOffers": _rule(SERVICE, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "AgentSession": _rule(SERVICE, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "AcceptOffer": _rule(SERVICE, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "DeclineOffer": _rule(SERVICE, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "WrapUp": _rule(*MANAGING, own=DESK, scopes=("routing:act-as-agent",)),
    _ROUTER + "SetHold": _rule(SERVICE, own=DESK, scopes=("routing:act-as-agent",)),
    # Without an agent id a transfer moves any contact: managing roles only (see the servicer).
    _ROUTER + "TransferContact": _rule(*MANAGING, own=DESK, scopes=("routing:act-as-agent",)),
    # ---- what the floor looks like
    _ROUTER + "ListAgents": _rule(*STAFF, scopes=("routing:read",)),
    _ROUTER + "GetQueueStats": _rule(
        TEAM_LEAD, SUPERVISOR, QA, ADMIN, SERVICE, scopes=("reports:read",)
    ),
    _ROUTER + "WatchQueueStats": _rule(
        TEAM_LEAD, SUPERVISOR, ADMIN, SERVICE, scopes=("reports:read",)
    ),
    _ROUTER + "ExplainDecision": _rule(*MANAGING, QA, scopes=("routing:read",)),
    _ROUTER + "GetContactPosition": _rule(*MANAGING, scopes=("routing:read",)),
    # ---- configuration and operations
    # Supervisors see the configuration and try it out; only administrators change it. The
    # admin console's agents directory (in the chat) follows the same two rules.
    _ROUTER_ADMIN + "GetConfig": _rule(SUPERVISOR, ADMIN),
    _ROUTER_ADMIN + "GetConfig:agents": _rule(SUPERVISOR, ADMIN),
    _ROUTER_ADMIN + "ApplyConfig": _rule(ADMIN),
    _ROUTER_ADMIN + "ApplyConfig:agents": _rule(ADMIN),
    _ROUTER_ADMIN + "PreviewRouting": _rule(SUPERVISOR, ADMIN),
    _EMAIL + "ListMailboxes": _rule(SUPERVISOR, ADMIN, SERVICE),
    # ---- listening in on live calls: the supervisor's own phone is rung
    _VOICE + "Supervise": _rule(SUPERVISOR),
    _VOICE + "SetSupervisionMode": _rule(SUPERVISOR),
    _VOICE + "EndSupervision": _rule(SUPERVISOR),
}


def rule_for(method: str) -> Rule | None:
    """The rule of a full method name (``/switchboard.v1.CaseService/GetCase``), if any."""
    return RULES.get(method)


def markdown() -> str:
    """The table as docs/security.md shows it: one row per rule, a column per role ("yes" for
    anyone, "own" for itself only) and the partner scopes that admit a partner."""
    staff = [r for r in ROLES if r != PARTNER]
    lines = [
        "| RPC | " + " | ".join(staff) + " | partner scopes |",
        "| --- | " + " | ".join("---" for _ in staff) + " | --- |",
    ]
    for method, rule in RULES.items():
        cells = ["yes" if r in rule.roles else "own" if r in rule.own else "" for r in staff]
        scopes = ", ".join(f"`{s}`" for s in sorted(rule.scopes))
        name = method.removeprefix("/switchboard.v1.")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {scopes} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
