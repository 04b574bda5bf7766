"""The tenant-to-group map every component reads (ROUTER_GROUPS, ROUTER_ENDPOINTS)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from switchboard.core.router_groups import RouterGroups, RouterGroupsError
from switchboard.core.settings import RouterGroupSettings

MAP = "g1=demo,acme; g2=korea"
ENDPOINTS = "g1=router-g1:50051;g2=router-g2:50051"


def test_each_tenant_has_its_group_and_its_groups_address() -> None:
    groups = RouterGroups.parse(MAP, ENDPOINTS)
    assert groups.partitioned
    assert groups.tenants_of("g1") == {"demo", "acme"}
    assert (groups.group_of("acme"), groups.group_of("korea")) == ("g1", "g2")
    assert groups.target("korea", "router:50051") == "router-g2:50051"
    assert groups.target("demo", "router:50051") == "router-g1:50051"
    # A tenant no group lists goes to the single address, whose router says why it refuses.
    assert groups.group_of("other") is None
    assert groups.target("other", "router:50051") == "router:50051"


def test_no_map_is_one_group_serving_every_tenant_at_the_single_address() -> None:
    groups = RouterGroups.parse("", "")
    assert not groups.partitioned
    assert groups.tenants_of("default") is None
    assert groups.target("korea", "router:50051") == "router:50051"
    assert groups.refusal("korea", "default") is None
    groups.check_endpoints()


def test_a_group_refuses_another_groups_tenant_naming_the_group_that_serves_it() -> None:
    groups = RouterGroups.parse(MAP, ENDPOINTS)
    assert groups.refusal("acme", "g1") is None
    why = groups.refusal("korea", "g1")
    assert why is not None
    assert "router group 'g2' at router-g2:50051" in why and "'g1'" in why
    none = groups.refusal("other", "g1")
    assert none is not None and "no router group" in none


@pytest.mark.parametrize(
    ("groups", "endpoints", "says"),
    [
        ("g1=demo;g2=demo", "", "tenant 'demo' is in groups 'g1' and 'g2'"),
        ("g1=demo;g1=acme", "", "group 'g1' is named twice"),
        ("g1", "", "'g1' is not <group>=<value>"),
        ("G1=demo", "", "'G1' is not a group name"),
        ("g1=Demo!", "", "'Demo!' is not a tenant name"),
        ("g1=demo", "g2=router:1", "g2 not in ROUTER_GROUPS"),
        ("", "g1=router:1", "ROUTER_GROUPS is not"),
    ],
)
def test_a_malformed_map_is_refused_saying_why(groups: str, endpoints: str, says: str) -> None:
    with pytest.raises(RouterGroupsError) as err:
        RouterGroups.parse(groups, endpoints)
    assert says in str(err.value)


def test_a_client_needs_an_address_for_every_group() -> None:
    s = RouterGroupSettings(ROUTER_GROUPS=MAP, ROUTER_ENDPOINTS="g1=router-g1:50051")
    with pytest.raises(RouterGroupsError, match="no address for g2"):
        s.router_targets("router:50051")
    full = RouterGroupSettings(ROUTER_GROUPS=MAP, ROUTER_ENDPOINTS=ENDPOINTS)
    target = full.router_targets("router:50051")
    assert callable(target) and target("korea") == "router-g2:50051"
    assert RouterGroupSettings().router_targets("router:50051") == "router:50051"


def test_settings_with_a_malformed_map_do_not_load() -> None:
    with pytest.raises(ValidationError, match="is in groups"):
        RouterGroupSettings(ROUTER_GROUPS="g1=demo;g2=demo")
