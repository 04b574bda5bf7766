"""The QA evaluator screen's HTTP API: ``POST /api/qa/<action>`` with a JSON body and
``Authorization: Bearer <inbox token>`` (from ``POST /api/agent/login``).

Every action is one or two case-service calls made with the caller's own token, so the case
service's rules decide who may do what (evaluators and supervisors sample, score and decide;
an agent lists and disputes only its own evaluations) and its audit trail names the caller.

- ``samples`` {from, to, agent_id, channel, targets, rate, seed, min_per_agent} -> {samples}
  (rate 0: only the targets)
- ``contact`` {contact_id} -> {contact, case}: the contact's messages (chat, email, fax) from its
  case, for reviewing it beside the form
- ``forms`` {} -> {forms}; ``form`` {form_id, version}; ``put_form`` {yaml} -> the new version
- ``score`` {contact_id, form_id, form_version, items: {item_id: passed}, comment}
- ``evaluations`` {agent_id, status} -> {evaluations}
- ``dispute`` {evaluation_id, reason}; ``decide`` {evaluation_id, uphold, items, note}
- ``scorecard`` {from, to, agent_id, team} -> {agents, teams, days, total, time_zone, team_by,
  team_names}: each day with its ``date`` (YYYY-MM-DD) in the tenant's time zone. When the
  tenant has teams in the agents directory, the teams are those (``team_by: "team"``, the
  agent -> team mapping passed to the case service; ``team`` filters by one), else the queues
  (``team_by: "queue"``)

Times are milliseconds since the epoch, both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from switchboard.chat.inbox import wire
from switchboard.chat.inbox.actions import CaseActions, int_arg, str_arg
from switchboard.chat.inbox.backends import Backends
from switchboard.chat.inbox.directory import Directory
from switchboard.core.errors import InvalidArgument, NotFound
from switchboard.core.service_client import call
from switchboard.v1 import case_pb2

PREFIX = "/api/qa/"
CHANNELS = {v: k for k, v in wire.CHANNELS.items()}


def _ts(data: dict[str, Any], key: str) -> Timestamp:
    value = data.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise InvalidArgument(key, "must be a time in milliseconds since the epoch")
    t = Timestamp()
    t.FromDatetime(datetime.fromtimestamp(value / 1000, UTC))
    return t


def _items(data: dict[str, Any]) -> list[case_pb2.QaItemResult]:
    items = data.get("items", {})
    if not isinstance(items, dict) or not all(isinstance(v, bool) for v in items.values()):
        raise InvalidArgument("items", "must map each item id to true (passed) or false")
    return [case_pb2.QaItemResult(item_id=str(k), passed=v) for k, v in items.items()]


def evaluation(e: case_pb2.QaEvaluation) -> dict[str, Any]:
    return {
        "evaluation_id": e.evaluation_id,
        "contact_id": e.contact_id,
        "agent_id": e.agent_id,
        "form_id": e.form_id,
        "form_version": e.form_version,
        "evaluator": e.evaluator,
        "score": e.score,
        "fatal_errors": e.fatal_errors,
        "non_fatal_errors": e.non_fatal_errors,
        "scored_at": wire.ms(e.scored_at),
        "channel": e.channel,
        "queue": e.queue,
        "items": {i.item_id: i.passed for i in e.items},
        "comment": e.comment,
        "status": e.status,
        "dispute_reason": e.dispute_reason,
        "disputed_at": wire.ms(e.disputed_at),
        "decided_by": e.decided_by,
        "decision_note": e.decision_note,
        "decided_at": wire.ms(e.decided_at),
        "original_score": e.original_score,
        "original_fatal_errors": e.original_fatal_errors,
    }


def form(f: case_pb2.QaForm) -> dict[str, Any]:
    return {
        "form_id": f.form_id,
        "version": f.version,
        "title": f.title,
        "items": [
            {"item_id": i.item_id, "text": i.text, "fatal": i.fatal, "weight": i.weight}
            for i in f.items
        ],
        "created_by": f.created_by,
    }


def _line(line: case_pb2.QaScoreLine) -> dict[str, Any]:
    return {
        "key": line.key,
        "evaluations": line.evaluations,
        "average_score": line.average_score,
        "fatal_error_rate": line.fatal_error_rate,
    }


class QaApi(CaseActions):
    what = "QA action"

    def __init__(
        self,
        backends: Callable[[str, str], Backends],
        directory: Callable[[], Directory] | None = None,
    ) -> None:
        super().__init__(backends)
        self._directory = directory  # the agents directory now: its teams group the scorecard

    async def __call__(
        self, token: str, tenant: str, action: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        if action != "scorecard":
            return await super().__call__(token, tenant, action, data)
        backends = self._backends(token, tenant)
        try:
            return await self._card(backends.case, tenant, data)
        finally:
            await backends.close()

    async def _samples(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        targets = data.get("targets", [])
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise InvalidArgument("targets", "must be a list of names")
        channel = str_arg(data, "channel")
        if channel and channel not in CHANNELS:
            raise InvalidArgument("channel", f"must be one of {', '.join(CHANNELS)}")
        rate = data.get("rate", 0)
        if not isinstance(rate, int | float) or isinstance(rate, bool):
            raise InvalidArgument("rate", "must be a number")
        request = case_pb2.ListQaSamplesRequest(
            targeted_only=rate == 0 and "rate" in data,
            to=_ts(data, "to"),
            agent_id=str_arg(data, "agent_id"),
            rate=float(rate),
            seed=str_arg(data, "seed"),
            min_per_agent=int_arg(data, "min_per_agent"),
            channel=CHANNELS.get(channel, 0),  # type: ignore[arg-type]
            targets=targets,
        )
        getattr(request, "from").CopyFrom(_ts(data, "from"))
        found = await call("ListQaSamples", case.ListQaSamples(request))
        return {
            "samples": [
                {
                    "contact_id": s.contact_id,
                    "agent_id": s.agent_id,
                    "queue": s.queue,
                    "channel": wire.CHANNELS.get(s.channel, ""),
                    "ended_at": wire.ms(s.ended_at),
                    "reasons": list(s.reasons),
                    "handle_seconds": s.handle_seconds,
                    "csat": s.csat,
                    "escalated": s.escalated,
                    "evaluation": evaluation(s.evaluation) if s.HasField("evaluation") else None,
                }
                for s in found.samples
            ],
            "seed": found.seed,
            "rate": found.rate,
        }

    async def _contact(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        contact_id = str_arg(data, "contact_id")
        if not contact_id:
            raise InvalidArgument("contact_id")
        listed = await call(
            "ListCases", case.ListCases(case_pb2.ListCasesRequest(contact_id=contact_id))
        )
        if not listed.cases:
            raise NotFound("contact", contact_id)
        found = await call(
            "GetCase", case.GetCase(case_pb2.GetCaseRequest(case_id=listed.cases[0].case_id))
        )
        for k in found.contacts:
            if k.contact_id == contact_id:
                return {
                    "contact": {
                        "contact_id": k.contact_id,
                        "channel": wire.CHANNELS.get(k.channel, ""),
                        "agent_id": k.agent_id,
                        "queue": k.queue,
                        "subject": k.subject,
                        "language": k.language,
                        "ended_at": wire.ms(k.ended_at),
                        "messages": [wire.message(m) for m in k.messages],
                    },
                    "case": {
                        "case_id": found.case_id,
                        "reference": found.reference,
                        "subject": found.subject,
                        "customer": found.customer.display_name,
                    },
                }
        raise NotFound("contact", contact_id)

    async def _forms(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        found = await call("ListQaForms", case.ListQaForms(case_pb2.ListQaFormsRequest()))
        return {"forms": [form(f) for f in found.forms]}

    async def _form(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.GetQaFormRequest(
            form_id=str_arg(data, "form_id"), version=int_arg(data, "version")
        )
        return form(await call("GetQaForm", case.GetQaForm(request)))

    async def _put_form(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.PutQaFormRequest(yaml=str_arg(data, "yaml"))
        return form(await call("PutQaForm", case.PutQaForm(request)))

    async def _score(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.SubmitQaScoreRequest(
            contact_id=str_arg(data, "contact_id"),
            form_id=str_arg(data, "form_id"),
            form_version=int_arg(data, "form_version"),
            items=_items(data),
            comment=str_arg(data, "comment"),
        )
        return evaluation(await call("SubmitQaScore", case.SubmitQaScore(request)))

    async def _evaluations(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.ListQaEvaluationsRequest(
            agent_id=str_arg(data, "agent_id"), status=str_arg(data, "status")
        )
        found = await call("ListQaEvaluations", case.ListQaEvaluations(request))
        return {"evaluations": [evaluation(e) for e in found.evaluations]}

    async def _dispute(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.DisputeQaEvaluationRequest(
            evaluation_id=str_arg(data, "evaluation_id"), reason=str_arg(data, "reason")
        )
        return evaluation(await call("DisputeQaEvaluation", case.DisputeQaEvaluation(request)))

    async def _decide(self, case: Any, data: dict[str, Any]) -> dict[str, Any]:
        uphold = data.get("uphold")
        if not isinstance(uphold, bool):
            raise InvalidArgument("uphold", "must be true or false")
        request = case_pb2.DecideQaDisputeRequest(
            evaluation_id=str_arg(data, "evaluation_id"),
            uphold=uphold,
            items=[] if uphold else _items(data),
            note=str_arg(data, "note"),
        )
        return evaluation(await call("DecideQaDispute", case.DecideQaDispute(request)))

    async def _card(self, case: Any, tenant: str, data: dict[str, Any]) -> dict[str, Any]:
        request = case_pb2.GetQaScorecardRequest(
            to=_ts(data, "to"), agent_id=str_arg(data, "agent_id"), team=str_arg(data, "team")
        )
        getattr(request, "from").CopyFrom(_ts(data, "from"))
        directory = self._directory() if self._directory else None
        teams = directory.teams_of(tenant) if directory else ()
        if directory and teams:
            request.agent_teams.update(directory.team_map(tenant))
        card = await call("GetQaScorecard", case.GetQaScorecard(request))
        return {
            "team_by": "team" if teams else "queue",
            "team_names": {t.team_id: t.name for t in teams},
            "agents": [_line(line) for line in card.agents],
            "teams": [_line(line) for line in card.teams],
            "days": [
                {
                    "day": wire.ms(p.day),
                    "date": p.date,
                    "evaluations": p.evaluations,
                    "average_score": p.average_score,
                    "fatal_error_rate": p.fatal_error_rate,
                }
                for p in card.days
            ],
            "total": _line(card.total),
            "time_zone": card.time_zone,
        }
