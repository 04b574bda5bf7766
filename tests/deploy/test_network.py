"""NetworkPolicies let through exactly the calls the services make. Who calls whom is read from
the manifests' own addresses (NATS_URL, *_ADDR), so a new peer without a policy fails here, and
so does a policy that opens a port nobody calls. The Secrets the pods use are documented."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_manifests import (
    K8S,
    OVERLAYS,
    ROOT,
    container_port,
    find,
    pod_labels,
    rendered,
    selects,
    service_of,
    workload,
    workloads,
    workloads_of,
)
from k8s_render import Resource, containers

EXTERNAL = "external"  # a client outside the cluster (ipBlock), e.g. a SIP trunk or an MX
NODE = "node"  # a node's address: what a host-network pod's connections come from
INGRESS_CONTROLLER = "ingress-nginx"  # the namespace the Ingress controller runs in
ADDRESS = re.compile(r"^(?:(?:nats|tls)://)?([a-z0-9-]+):(\d+)$")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector: matchLabels and matchExpressions with In."""
    expressions = selector.get("matchExpressions", [])
    assert all(e["operator"] == "In" for e in expressions), expressions
    return selects(selector.get("matchLabels", {}), labels) and all(
        labels.get(e["key"]) in e["values"] for e in expressions
    )


def _peer_matches(peer: dict[str, Any], source: dict[str, str] | str) -> bool:
    if "ipBlock" in peer:
        # Any address, or the nodes' range (the overlays set it).
        return isinstance(source, str) and source in (
            {EXTERNAL, NODE} if peer["ipBlock"]["cidr"] == "0.0.0.0/0" else {NODE}
        )
    if "namespaceSelector" in peer:
        labels = peer["namespaceSelector"].get("matchLabels", {})
        return source == labels.get("kubernetes.io/metadata.name")
    return isinstance(source, dict) and _selects(peer["podSelector"], source)


def _host_network(workload: Resource) -> bool:
    return bool(workload["spec"]["template"]["spec"].get("hostNetwork"))


def _address(workload: Resource) -> dict[str, str] | str:
    """Who a workload's connections come from: its pods, or its node (host network)."""
    return NODE if _host_network(workload) else pod_labels(workload)


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, protocol: str) -> bool:
    if not rule_ports:
        return True
    return any(
        p.get("protocol", "TCP") == protocol and p["port"] <= port <= p.get("endPort", p["port"])
        for p in rule_ports
    )


def _allowed(
    policies: list[Resource], direction: str, pod: dict[str, str] | str, peer, port, proto
):
    """Whether the policies that select `pod` let `peer` through on port/proto in `direction`.
    No policy applies to a host-network pod (`pod` is NODE)."""
    if pod == NODE:
        return True
    kind = "Ingress" if direction == "ingress" else "Egress"
    selecting = [
        p
        for p in policies
        if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True
    peers = "from" if direction == "ingress" else "to"
    return any(
        _port_matches(rule.get("ports"), port, proto)
        and (not rule.get(peers) or any(_peer_matches(x, peer) for x in rule[peers]))
        for p in selecting
        for rule in p["spec"].get(direction, [])
    )


def _calls(overlay: str) -> set[tuple[str, str, int]]:
    """(caller, callee workload, container port) for every address a service is given."""
    services = {r["metadata"]["name"]: r for r in rendered(overlay) if r["kind"] == "Service"}
    config = {
        r["metadata"]["name"]: r.get("data", {})
        for r in rendered(overlay)
        if r["kind"] == "ConfigMap"
    }
    calls = set()
    for w in workloads(overlay, ours=True):
        [c] = containers(w)
        given = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        for source in c.get("envFrom", []):
            given |= config[source["configMapRef"]["name"]]
        if service_of(w) == "router":
            # The routers name the other groups' addresses in their refusals, never call them.
            given.pop("ROUTER_ENDPOINTS", None)
        # A list of addresses by name (ROUTER_ENDPOINTS: g1=router-g1:50051;g2=...) is each.
        addresses = [i.split("=", 1)[-1].strip() for v in given.values() for i in v.split(";")]
        for value in addresses:
            if not (m := ADDRESS.match(value)) or m[1] not in services:
                continue
            svc = services[m[1]]
            [port] = [p for p in svc["spec"]["ports"] if p["port"] == int(m[2])]
            for callee in workloads(overlay):
                if selects(svc["spec"]["selector"], pod_labels(callee)):
                    target = container_port(callee, port["targetPort"], "TCP")
                    calls.add(
                        (w["metadata"]["name"], callee["metadata"]["name"], target["containerPort"])
                    )
    return calls


def _policies(overlay: str) -> list[Resource]:
    return [r for r in rendered(overlay) if r["kind"] == "NetworkPolicy"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_call_the_services_make_is_allowed_and_nothing_else(overlay: str) -> None:
    policies = _policies(overlay)
    calls = _calls(overlay)
    if any(w["metadata"]["name"] == "postgresql" for w in workloads(overlay)):
        calls.add(("case", "postgresql", 5432))  # CASE_DATABASE_URL, from its Secret
    routers = [w["metadata"]["name"] for w in workloads_of(overlay, "router")]
    assert routers and all(
        (caller, router, 50051) in calls
        for caller in ("chat", "voice-gateway")
        for router in routers
    )
    assert ("chat", "case", 50052) in calls and ("fax", "nats", 4222) in calls
    by_name = {w["metadata"]["name"]: w for w in workloads(overlay)}
    for caller in workloads(overlay, ours=True):
        for callee in by_name.values():
            if _host_network(callee):
                continue  # no policy applies to it: the node's firewall (docs/deploy.md)
            for c in containers(callee):
                for p in c.get("ports", []):
                    port, proto = p["containerPort"], p.get("protocol", "TCP")
                    key = (caller["metadata"]["name"], callee["metadata"]["name"], port)
                    src, dst = _address(caller), pod_labels(callee)
                    out = _allowed(policies, "egress", src, dst, port, proto)
                    into = _allowed(policies, "ingress", dst, src, port, proto)
                    public = _allowed(policies, "ingress", dst, EXTERNAL, port, proto)
                    if key in calls:
                        assert out and into, f"{overlay}: {key} is called but not allowed"
                    elif not public:  # a channel: the next test checks those
                        assert not (out and into), f"{overlay}: {key} is allowed, never called"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_customers_reach_the_channels_and_nothing_else(overlay: str) -> None:
    policies = _policies(overlay)
    opened = set()
    for svc in (r for r in rendered(overlay) if r["kind"] == "Service"):
        if svc["spec"].get("type") != "LoadBalancer":
            continue
        for w in workloads(overlay):
            if selects(svc["spec"]["selector"], pod_labels(w)):
                for p in svc["spec"]["ports"]:
                    proto = p.get("protocol", "TCP")
                    port = container_port(w, p["targetPort"], proto)["containerPort"]
                    opened.add((w["metadata"]["name"], port, proto))
    ingress = next(r for r in rendered(overlay) if r["kind"] == "Ingress")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            [svc] = [
                r
                for r in rendered(overlay)
                if r["kind"] == "Service" and r["metadata"]["name"] == backend["name"]
            ]
            [sp] = [p for p in svc["spec"]["ports"] if p["name"] == backend["port"]["name"]]
            [w] = [w for w in workloads(overlay) if selects(svc["spec"]["selector"], pod_labels(w))]
            port = container_port(w, sp["targetPort"], "TCP")["containerPort"]
            assert _allowed(policies, "ingress", pod_labels(w), INGRESS_CONTROLLER, port, "TCP")
    assert {(n, proto) for n, _, proto in opened} >= {
        ("voice-gateway", "UDP"),
        ("voice-gateway", "TCP"),
        ("email-ingest", "TCP"),
    }
    if overlay == "dev":  # from-nodes lets any address through: one node, a developer's machine
        opened |= {("nats", 4222, "TCP"), ("router", 50051, "TCP")}
    for w in workloads(overlay):
        if _host_network(w):
            continue  # the voice gateway: the node's firewall, not policies (docs/deploy.md)
        for c in containers(w):
            for p in c.get("ports", []):
                key = (w["metadata"]["name"], p["containerPort"], p.get("protocol", "TCP"))
                allowed = _allowed(policies, "ingress", pod_labels(w), EXTERNAL, *key[1:])
                assert allowed == (key in opened), f"{overlay}: from outside to {key}"


def test_every_secret_is_named_in_the_base_or_its_component_and_documented() -> None:
    documented = "".join(
        (K8S / part / "kustomization.yaml").read_text()
        for part in ["base", *(f"components/{p.name}" for p in (K8S / "components").iterdir())]
    )
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for overlay in OVERLAYS:
        names = set()
        for w in workloads(overlay):
            pod = w["spec"]["template"]["spec"]
            for volume in pod.get("volumes", []):
                sources = volume.get("projected", {}).get("sources", [volume])
                names |= {
                    s["secret"].get("secretName") or s["secret"]["name"]
                    for s in sources
                    if "secret" in s
                }
            for c in containers(w):
                names |= {
                    e["valueFrom"]["secretKeyRef"]["name"]
                    for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})
                }
        for ing in (r for r in rendered(overlay) if r["kind"] == "Ingress"):
            names |= {t["secretName"] for t in ing["spec"]["tls"]}
        for name in names:
            assert name in guide, f"docs/deploy.md does not say what {name} holds"
            if name != "switchboard-postgresql":
                assert name in documented, f"no kustomization.yaml names {name}"


def test_production_names_the_nodes_the_voice_gateways_call_from() -> None:
    [policy] = [r for r in rendered("production") if r["metadata"]["name"] == "from-nodes"]
    [rule] = policy["spec"]["ingress"]
    assert rule["from"] == [{"ipBlock": {"cidr": "NODE_CIDR"}}]  # replaced by the operator
    assert "NODE_CIDR" in (ROOT / "docs" / "deploy.md").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_voice_gateway_replica_has_a_stable_name_the_chat_resolves(overlay: str) -> None:
    """The gateways' Service is headless and governs their StatefulSet (voice-gateway-0.voice-
    gateway.<namespace>.svc, ...; its name resolves to every ready replica): the chat resolves
    it at the gateways' gRPC port, instead of a list of addresses it could not know."""
    gateways = workload(overlay, "voice-gateway")
    assert gateways["kind"] == "StatefulSet"
    service = find(overlay, "Service", gateways["spec"]["serviceName"])
    assert service["spec"].get("clusterIP") == "None"
    assert selects(service["spec"]["selector"], pod_labels(gateways))
    [grpc_port] = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
    target = container_port(gateways, grpc_port["targetPort"], "TCP")
    assert target is not None
    [gateway] = containers(gateways)
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["VOICE_GRPC_PORT"] == str(target["containerPort"])
    [chat] = containers(workload(overlay, "chat"))
    chat_env = {e["name"]: e.get("value") for e in chat["env"]}
    assert chat_env["CHAT_VOICE_SERVICE"] == f"{service['metadata']['name']}:{grpc_port['port']}"
    assert "CHAT_VOICE_ENDPOINTS" not in chat_env
    assert ("chat", "voice-gateway", target["containerPort"]) in _calls(overlay)


@pytest.mark.parametrize("overlay", [o for o in OVERLAYS if o != "dev"])
def test_the_chat_reaches_the_host_network_gateways_at_their_nodes_only_there(
    overlay: str,
) -> None:
    """On the host network the gateways answer at their nodes' addresses: the chat's egress to
    the nodes' range is open on their gRPC port (policy to-nodes) and on nothing else."""
    policies = _policies(overlay)
    if not policies:
        pytest.skip("no NetworkPolicies in this overlay")
    chat = pod_labels(workload(overlay, "chat"))
    assert _allowed(policies, "egress", chat, NODE, 50054, "TCP")
    for port, proto in ((5060, "UDP"), (5060, "TCP"), (9464, "TCP"), (22, "TCP")):
        assert not _allowed(policies, "egress", chat, NODE, port, proto), (port, proto)
    [policy] = [r for r in policies if r["metadata"]["name"] == "to-nodes"]
    assert policy["spec"]["egress"][0]["to"] == [{"ipBlock": {"cidr": "NODE_CIDR"}}]
