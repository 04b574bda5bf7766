"""Per-mailbox routing: the recipient address picks tenant, queue (and maybe a language or
skills); keywords in the subject and text add skills and priority."""

from __future__ import annotations

from dataclasses import dataclass, field

from switchboard.email_ingest.config import Mailbox, strip_plus


@dataclass
class RouteDecision:
    tenant: str
    queue: str
    skills: list[str] = field(default_factory=list)
    language: str = ""
    priority: int = 0
    matched: list[str] = field(default_factory=list)


def route(mailbox: Mailbox, recipients: list[str], subject: str, text: str) -> RouteDecision:
    decision = RouteDecision(mailbox.tenant, mailbox.queue)
    addresses = [strip_plus(a) for a in recipients]
    for rule in mailbox.routes:
        hit = next((a for a in addresses if rule.matches(a)), None)
        if hit is None:
            continue
        decision.tenant = rule.tenant or decision.tenant
        decision.queue = rule.queue or decision.queue
        decision.language = rule.language or decision.language
        decision.skills += [s for s in rule.skills if s not in decision.skills]
        decision.matched.append(f"address {rule.address} -> {decision.tenant}/{decision.queue}")
        break
    haystack = f"{subject}\n{text}".casefold()
    for skill_rule in mailbox.skills:
        word = next((k for k in skill_rule.keywords if k.casefold() in haystack), None)
        if word is not None and skill_rule.skill not in decision.skills:
            decision.skills.append(skill_rule.skill)
            decision.matched.append(f"keyword {word!r} -> skill {skill_rule.skill}")
    word = next((k for k in mailbox.priority_keywords if k.casefold() in haystack), None)
    if word is not None:
        decision.priority = 1
        decision.matched.append(f"keyword {word!r} -> priority 1")
    return decision
