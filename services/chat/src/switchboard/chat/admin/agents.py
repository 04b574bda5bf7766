"""The admin console's changes to one tenant's agents, checked by the agents file's own validator.

A change is made to the tenant's directory as the agents file's YAML and read back with
`directory.load_text`, so the console refuses exactly what a hand-edited file would be refused
for, with the same field path and reason (``tenants.demo.agents[4].languages.ko: must be an
integer from 1 to 5``). Pure: no I/O; the password is hashed by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from switchboard.chat.inbox import directory as agents_directory
from switchboard.chat.inbox.directory import AGENT_ID_RE, Directory
from switchboard.core.errors import FailedPrecondition, InvalidArgument, NotFound

# What an administrator may set; the id names the agent, the password has its own action.
EDITABLE = ("name", "role", "ui_language", "languages", "skills", "capacity", "disabled", "team")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class Change:
    action: str  # agent.add, agent.edit, agent.password
    agent_id: str
    changes: dict[str, Any]  # field -> new value; a password only as "changed"


def _section(part: Directory, tenant: str) -> dict[str, Any]:
    dumped = yaml.safe_load(agents_directory.dump(part, [tenant]))
    return dict(dumped["tenants"][tenant])


def _load(section: dict[str, Any], tenant: str) -> tuple[Directory, str]:
    text = yaml.safe_dump(
        {"tenants": {tenant: section}}, allow_unicode=True, sort_keys=False, default_flow_style=None
    )
    # No source: the error reads "tenants.<t>.agents[i].<field>: <problem>", as in the file.
    return agents_directory.load_text(text, ""), text


def check_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument("password", f"must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def save(
    part: Directory,
    tenant: str,
    agent_id: Any,
    data: dict[str, Any],
    *,
    create: bool,
    password_hash: str = "",
) -> tuple[Directory, str, Change]:
    """`tenant`'s directory with the agent added (`create`, with its `password_hash`) or edited
    (the fields of `data` among EDITABLE); its YAML; what changed."""
    if not isinstance(agent_id, str) or not AGENT_ID_RE.match(agent_id):
        raise InvalidArgument("id", "must be 1-64 of A-Z a-z 0-9 . _ -")
    section = _section(part, tenant)
    agents: list[dict[str, Any]] = section["agents"]
    index = next((i for i, a in enumerate(agents) if a["id"] == agent_id), None)
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        raise InvalidArgument(unknown[0], f"unknown field (expected one of {sorted(EDITABLE)})")
    if create:
        if index is not None:
            raise FailedPrecondition(f"agent {agent_id} already exists")
        if not password_hash:
            raise InvalidArgument("password", "is required for a new agent")
        entry: dict[str, Any] = {"id": agent_id, "password": password_hash}
        agents.append(entry)
    else:
        if index is None:
            raise NotFound("agent", agent_id)
        entry = agents[index]
    before = dict(entry)
    for key in EDITABLE:
        if key not in data:
            continue
        value = data[key]
        if value is None or value == {} or value is False or (key == "team" and value == ""):
            entry.pop(key, None)  # the file's default
        else:
            entry[key] = value
    changed = {k: entry.get(k) for k in EDITABLE if entry.get(k) != before.get(k)}
    if not create and "role" in changed:
        changed["role_before"] = before.get("role") or "agent"  # a demotion revokes tokens
    if create:
        changed["password"] = "changed"
    loaded, text = _load(section, tenant)
    action = "agent.add" if create else "agent.edit"
    if not create and set(changed) == {"disabled"}:
        action = "agent.disable" if changed["disabled"] else "agent.enable"
    return loaded, text, Change(action, agent_id, changed)


def set_password(
    part: Directory, tenant: str, agent_id: str, password_hash: str
) -> tuple[Directory, str, Change]:
    """`tenant`'s directory with the agent's password replaced."""
    section = _section(part, tenant)
    entry = next((a for a in section["agents"] if a["id"] == agent_id), None)
    if entry is None:
        raise NotFound("agent", agent_id)
    entry["password"] = password_hash
    loaded, text = _load(section, tenant)
    return loaded, text, Change("agent.password", agent_id, {"password": "changed"})


def set_codes(part: Directory, tenant: str, codes: Any) -> tuple[Directory, str, Change]:
    """`tenant`'s directory with its wrap-up codes (the file's ``wrap_up_codes``) replaced, in
    the order given: open desks are given them at once (Inbox.profiles_changed)."""
    if not isinstance(codes, list) or not codes:
        raise InvalidArgument(f"tenants.{tenant}.wrap_up_codes", "must be a list of codes")
    section = _section(part, tenant)
    before = list(section.get("wrap_up_codes") or [])
    section = {**section, "wrap_up_codes": codes}
    loaded, text = _load(section, tenant)
    return loaded, text, Change("codes.set", tenant, {"wrap_up_codes": codes, "before": before})


OIDC_FIELDS = ("name", "issuer", "client_id", "client_secret_file", "agent_claim", "email_domain")


def set_oidc(part: Directory, tenant: str, oidc: Any) -> tuple[Directory, str, Change]:
    """`tenant`'s directory with its company sign-in (the file's ``oidc``) replaced, or removed
    (`oidc` None): checked as the agents file's section is."""
    section = _section(part, tenant)
    before = section.get("oidc")
    if oidc is None:
        section.pop("oidc", None)
    elif not isinstance(oidc, dict):
        raise InvalidArgument(f"tenants.{tenant}.oidc", "must be the provider's settings")
    else:
        given = {k: v for k, v in oidc.items() if v not in (None, "")}
        # Ahead of the agents, as the file has it.
        section = {
            "wrap_up_codes": section.get("wrap_up_codes"),
            "oidc": given,
            "agents": section["agents"],
        }
    loaded, text = _load(section, tenant)
    after = loaded.provider(tenant)
    action = "oidc.set" if after is not None else "oidc.remove"
    changed = {"oidc": after.to_yaml() if after else None, "before": before}
    return loaded, text, Change(action, tenant, changed)


def set_teams(part: Directory, tenant: str, teams: Any) -> tuple[Directory, str, Change]:
    """`tenant`'s directory with its teams (the file's ``teams``: id, name, leads) replaced, in
    the order given. The agents of a team no longer there are left in none."""
    if not isinstance(teams, list):
        raise InvalidArgument(f"tenants.{tenant}.teams", "must be a list of teams")
    section = _section(part, tenant)
    before = list(section.get("teams") or [])
    kept = {t.get("id") for t in teams if isinstance(t, dict)}
    left: list[str] = []
    for agent in section["agents"]:
        if agent.get("team") and agent["team"] not in kept:
            left.append(agent["id"])
            agent.pop("team")
    agents = section.pop("agents")
    if teams:
        section["teams"] = teams
    else:
        section.pop("teams", None)
    section["agents"] = agents  # after the teams, as the file has it
    loaded, text = _load(section, tenant)
    after = [t.to_yaml() for t in loaded.teams_of(tenant)]
    changed: dict[str, Any] = {"teams": after, "before": before}
    if left:
        changed["left_without_team"] = left
    return loaded, text, Change("teams.set", tenant, changed)


def listing(part: Directory, tenant: str) -> list[dict[str, Any]]:
    """The tenant's agents as the console shows them (no password hashes)."""
    return [
        p.to_wire()
        for (t, _), p in sorted(part.agents.items(), key=lambda kv: kv[0][1])
        if t == tenant
    ]
