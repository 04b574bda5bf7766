"""The QA screen's scorecard groups by the agents directory's teams when the tenant has some:
the chat, which owns the directory, passes the agent -> team mapping to the case service."""

from __future__ import annotations

from typing import Any

from switchboard.chat.inbox import directory
from switchboard.chat.inbox.qa import QaApi
from switchboard.v1 import case_pb2

HASH = directory.hash_password("pw", b"0123456789abcdef")
FILE = f"""tenants:
  demo:
    teams: [{{id: ko-team, name: 한국어 팀, leads: [a1]}}]
    agents:
    - {{id: a1, password: '{HASH}', team: ko-team}}
    - {{id: a2, password: '{HASH}'}}
  acme:
    agents:
    - {{id: a1, password: '{HASH}'}}
"""


class FakeCase:
    """The case service's GetQaScorecard, recording the request it was given."""

    def __init__(self) -> None:
        self.requests: list[case_pb2.GetQaScorecardRequest] = []

    async def GetQaScorecard(self, request: case_pb2.GetQaScorecardRequest) -> Any:
        self.requests.append(request)
        line = case_pb2.QaScoreLine(key="ko-team", evaluations=1, average_score=90.0)
        return case_pb2.QaScorecard(teams=[line], total=line, time_zone="UTC")


class FakeBackends:
    def __init__(self, case: FakeCase) -> None:
        self.case = case

    async def close(self) -> None:
        pass


async def test_the_scorecard_is_by_the_directorys_teams_when_the_tenant_has_them() -> None:
    case = FakeCase()
    api = QaApi(lambda token, tenant: FakeBackends(case), lambda: directory.load_text(FILE))  # type: ignore[arg-type,return-value]
    body = {"from": 1, "to": 2, "team": "ko-team"}
    card = await api("token", "demo", "scorecard", body)
    assert dict(case.requests[-1].agent_teams) == {"a1": "ko-team"}
    assert case.requests[-1].team == "ko-team"
    assert card["team_by"] == "team" and card["team_names"] == {"ko-team": "한국어 팀"}
    # A tenant without teams: by queue, and no mapping (another tenant's teams are not its).
    card = await api("token", "acme", "scorecard", {"from": 1, "to": 2})
    assert dict(case.requests[-1].agent_teams) == {}
    assert card["team_by"] == "queue" and card["team_names"] == {}
