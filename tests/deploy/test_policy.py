"""Our rules for every rendered overlay: locked-down pods with probes and limits, pinned images,
Services that reach declared ports and say what they speak, disruption budgets, the router pair
apart, each service given exactly the settings it reads and the ones it cannot do without, its
own NATS user with a password from a Secret, and NATS secured by its Secrets."""

from __future__ import annotations

import copy
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_manifests import (
    OVERLAYS,
    ROOT,
    SECRET_NAME,
    SETTINGS,
    container_port,
    find,
    nats_credential_faults,
    pod_labels,
    rendered,
    selects,
    service_of,
    services_of,
    settings_faults,
    workloads,
    workloads_of,
)
from k8s_render import containers, image_name

from switchboard.cli.endpoints import SERVICES
from switchboard.core import nats_auth
from switchboard.core.router_groups import RouterGroups
from switchboard.core.settings import RouterGroupSettings

APP_PROTOCOLS = {"grpc", "http", "https", "sip", "sips", "smtp", "nats", "postgresql"}


def _each_container(ours: bool | None = None) -> list[tuple[str, str, dict]]:
    return [
        (overlay, w["metadata"]["name"], c)
        for overlay in OVERLAYS
        for w in workloads(overlay, ours)
        for c in containers(w)
    ]


def test_every_service_is_deployed_in_every_overlay() -> None:
    for overlay in OVERLAYS:
        deployed = {service_of(w) for w in workloads(overlay, ours=True)}
        assert deployed == {s.name for s in SERVICES}, overlay


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay: str) -> None:
    for w in workloads(overlay):
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        if service_of(w) in SETTINGS:
            assert pod["securityContext"]["runAsUser"] == 10001, name
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_limits_and_a_pinned_image(overlay: str) -> None:
    for w in workloads(overlay):
        for c in containers(w):
            where = f"{overlay} {w['metadata']['name']}/{c['name']}"
            assert "readinessProbe" in c and "livenessProbe" in c, where
            for kind in ("requests", "limits"):
                assert set(c["resources"][kind]) == {"cpu", "memory"}, f"{where} {kind}"
            tag = c["image"][len(image_name(c["image"])) :]
            assert tag and tag != ":latest", f"{where}: {c['image']} is not pinned"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_port_targets_a_declared_port_and_names_its_protocol(overlay: str) -> None:
    for w in workloads(overlay):
        for svc in services_of(overlay, w):
            for port in svc["spec"]["ports"]:
                where = f"{overlay} Service {svc['metadata']['name']} port {port['name']}"
                assert port.get("appProtocol") in APP_PROTOCOLS, where
                target = port.get("targetPort", port["port"])
                assert container_port(w, target, port.get("protocol", "TCP")), where
    for svc in (r for r in rendered(overlay) if r["kind"] == "Service"):
        assert any(selects(svc["spec"]["selector"], pod_labels(w)) for w in workloads(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_use_declared_ports(overlay: str) -> None:
    for w in workloads(overlay):
        for c in containers(w):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = c.get(probe, {})
                for kind in ("grpc", "httpGet", "tcpSocket"):
                    if kind in spec:
                        assert container_port(w, spec[kind]["port"], "TCP"), (w, probe)


def test_every_channel_a_service_listens_on_is_declared_and_exposed() -> None:
    """The listeners `make run` opens (libs/cli endpoints) are ports of the pod and of a Service."""
    for overlay in OVERLAYS:
        for spec, w in ((s, w) for s in SERVICES for w in workloads_of(overlay, s.name)):
            [c] = containers(w)
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            envs = [spec.grpc_env, *([spec.http_env] if spec.http_env else [])]
            envs += [listener.env for listener in spec.listeners]
            exposed = {
                str(
                    container_port(w, p.get("targetPort", p["port"]), p.get("protocol", "TCP"))[
                        "containerPort"
                    ]
                )
                for svc in services_of(overlay, w)
                for p in svc["spec"]["ports"]
            }
            for name in envs:
                assert env.get(name) in exposed, f"{overlay} {spec.name}: {name} is not exposed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_gets_exactly_what_it_reads_and_all_it_needs(overlay: str) -> None:
    faults = [
        f for w in workloads(overlay, ours=True) for f in settings_faults(w, rendered(overlay))
    ]
    assert not faults, "\n".join(faults)


def test_replicated_workloads_have_disruption_budgets() -> None:
    for overlay in OVERLAYS:
        budgets = [r for r in rendered(overlay) if r["kind"] == "PodDisruptionBudget"]
        for w in workloads(overlay):
            covered = [
                b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], pod_labels(w))
            ]
            if w["metadata"]["name"] != "postgresql":
                assert len(covered) == 1, (overlay, w["metadata"]["name"])
                assert covered[0]["spec"] == {
                    "maxUnavailable": 1,
                    "selector": covered[0]["spec"]["selector"],
                }


def test_production_keeps_the_router_pair_and_nats_quorum_on_different_nodes() -> None:
    for name, kind, replicas in [
        ("router", "Deployment", 2),
        ("nats", "StatefulSet", 3),
        ("voice-gateway", "StatefulSet", 2),
    ]:
        w = find("production", kind, name)
        assert w["spec"]["replicas"] == replicas
        [term] = w["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert selects(term["labelSelector"]["matchLabels"], pod_labels(w))
    config = find("production", "ConfigMap", "switchboard-config")["data"]
    assert config["NATS_STREAM_REPLICAS"] == "3"
    nats_conf = find("production", "ConfigMap", "nats-config")["data"]["nats.conf"]
    for i in range(3):
        assert f"nats://nats-{i}.nats-cluster:6222" in nats_conf
    assert "store_dir: /data" in nats_conf
    assert find("production", "StatefulSet", "nats")["spec"]["volumeClaimTemplates"]


def test_dev_runs_one_of_everything_without_anti_affinity() -> None:
    for w in workloads("dev"):
        assert w["spec"]["replicas"] == 1, w["metadata"]["name"]
        assert "affinity" not in w["spec"]["template"]["spec"], w["metadata"]["name"]
    assert find("dev", "ConfigMap", "switchboard-config")["data"]["NATS_STREAM_REPLICAS"] == "1"
    assert "cluster" not in find("dev", "ConfigMap", "nats-config")["data"]["nats.conf"]


def test_the_case_store_is_postgresql_from_a_secret() -> None:
    for overlay in OVERLAYS:
        [c] = containers(find(overlay, "Deployment", "case"))
        [url] = [e for e in c["env"] if e["name"] == "CASE_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "switchboard-case-db", "key": "url"}


def test_the_image_recipe_builds_each_services_console_script() -> None:
    for spec in SERVICES:
        project = tomllib.loads((ROOT / "services" / spec.name / "pyproject.toml").read_text())
        assert project["project"]["name"] == f"switchboard-{spec.name}"
        assert f"switchboard-{spec.name}" in project["project"]["scripts"]


def _env(workload: dict[str, Any]) -> list[dict[str, Any]]:
    [container] = containers(workload)
    return list(container["env"])


def test_the_settings_check_catches_a_variable_nobody_reads_and_a_missing_one() -> None:
    resources = rendered("production")
    chat = copy.deepcopy(find("production", "Deployment", "chat"))
    assert settings_faults(chat, resources) == []
    env = _env(chat)
    env.append({"name": "CHAT_COLOUR", "value": "blue"})
    env[:] = [e for e in env if e["name"] not in {"CHAT_TLS_CERT_FILE", "CHAT_HTTP_HOST"}]
    containers(chat)[0]["env"] = env
    assert settings_faults(chat, resources) == [
        "chat does not read ['CHAT_COLOUR']",
        "chat cannot run in a pod on the defaults of ['CHAT_HTTP_HOST']",
        "chat runs outside the security model without ['CHAT_TLS_CERT_FILE']",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_is_its_own_nats_user_with_its_password_from_a_secret(overlay: str) -> None:
    faults = [
        f
        for w in workloads(overlay, ours=True)
        for f in nats_credential_faults(w, rendered(overlay))
    ]
    assert not faults, "\n".join(faults)
    users = {
        e["value"]
        for w in workloads(overlay, ours=True)
        for e in _env(w)
        if e["name"] == "NATS_USER"
    }
    assert users == set(nats_auth.SERVICES)
    for config in (r for r in rendered(overlay) if r["kind"] == "ConfigMap"):
        for key, value in config.get("data", {}).items():
            assert not SECRET_NAME.search(key) or value.startswith("/"), (config, key)
            assert "password" not in value.lower(), (config["metadata"]["name"], key)


def test_the_credential_check_catches_another_user_a_written_password_and_plain_nats() -> None:
    resources = copy.deepcopy(list(rendered("production")))
    [fax] = [r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == "fax"]
    [config] = [r for r in resources if r["metadata"]["name"] == "switchboard-config"]
    for e in _env(fax):
        if e["name"] == "NATS_USER":
            e["value"] = "chat"
        if e["name"] == "NATS_PASSWORD":
            e.pop("valueFrom")
            e["value"] = "hunter2"
    config["data"]["NATS_URL"] = "nats://nats:4222"
    assert nats_credential_faults(fax, resources) == [
        "fax: NATS_USER is 'chat', not its own user of nats_auth.SERVICES",
        "fax: NATS_PASSWORD is not the key chat of the Secret nats-users",
        "fax: NATS_URL 'nats://nats:4222' is not tls://host:port",
        "fax: NATS_PASSWORD is written out, not taken from a Secret",
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_takes_its_users_tls_and_encryption_key_from_secrets(overlay: str) -> None:
    nats = find(overlay, "StatefulSet", "nats")
    pod = nats["spec"]["template"]["spec"]
    [container] = containers(nats)
    [key] = [e for e in container["env"] if e["name"] == nats_auth.KEY_ENV]
    assert key["valueFrom"]["secretKeyRef"] == {"name": "nats-jetstream-key", "key": "key"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes.get(m["name"], {}) for m in container["volumeMounts"]}
    sources = mounts["/etc/nats"]["projected"]["sources"]
    assert {"configMap": {"name": "nats-config"}} in sources
    assert {"secret": {"name": "nats-auth"}} in sources
    assert mounts["/etc/nats-tls"]["secret"] == {"secretName": "nats-tls"}
    conf = find(overlay, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "include auth.conf" in conf and "password" not in conf
    assert "cipher: chachapoly" in conf and f"key: ${nats_auth.KEY_ENV}" in conf
    tls = "cert_file: /etc/nats-tls/tls.crt"
    # Clients, and (clustered) routes: TLS with a certificate of the CA required of the peer.
    assert conf.count(tls) == conf.count("verify: true") == (2 if "cluster {" in conf else 1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grpc_probes_go_to_the_plain_text_health_port(overlay: str) -> None:
    config = find(overlay, "ConfigMap", "switchboard-config")["data"]
    health = int(config["GRPC_HEALTH_PORT"])
    assert config["GRPC_TLS_CLIENT_AUTH"] == "require"
    for w in workloads(overlay, ours=True):
        [c] = containers(w)
        assert container_port(w, health, "TCP"), w["metadata"]["name"]
        probes = [c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in c]
        assert any("grpc" in p for p in probes), w["metadata"]["name"]
        for probe in probes:
            if "grpc" in probe:
                assert probe["grpc"]["port"] == health, (w["metadata"]["name"], probe)
            if "httpGet" in probe:
                assert probe["httpGet"]["scheme"] == "HTTPS", (w["metadata"]["name"], probe)


def _router_group(w: dict[str, Any]) -> str:
    [group] = [e["value"] for e in _env(w) if e["name"] == "ROUTER_GROUP"]
    return str(group)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_router_groups_map_names_exactly_the_groups_deployed(overlay: str) -> None:
    """ROUTER_GROUPS and ROUTER_ENDPOINTS (one ConfigMap, taken by every caller of the router and
    no other service) name each group's Service and its gRPC port; each group is one Deployment
    of two routers apart, whose ROUTER_GROUP names it; each tenant of the map is a tenant of
    the deployment. Without a map, the one router is the group `default`."""
    maps = [
        r for r in rendered(overlay) if r["kind"] == "ConfigMap" and "ROUTER_GROUPS" in r["data"]
    ]
    routers = workloads_of(overlay, "router")
    if not maps:
        assert [_router_group(w) for w in routers] == ["default"], overlay
        return
    [config] = maps
    groups = RouterGroups.parse(config["data"]["ROUTER_GROUPS"], config["data"]["ROUTER_ENDPOINTS"])
    assert len(groups.groups) > 1 and set(groups.endpoints) == set(groups.groups)
    for w in workloads(overlay, ours=True):
        [c] = containers(w)
        reads = issubclass(SETTINGS[service_of(w)], RouterGroupSettings)
        takes = {"configMapRef": {"name": config["metadata"]["name"]}} in c.get("envFrom", [])
        assert takes == reads, (overlay, w["metadata"]["name"])
    services = {r["metadata"]["name"]: r for r in rendered(overlay) if r["kind"] == "Service"}
    by_group = {_router_group(w): w for w in routers}
    assert len(by_group) == len(routers) and set(by_group) == set(groups.groups), overlay
    for group, address in groups.endpoints.items():
        host, port = address.rsplit(":", 1)
        svc = services[host]
        [grpc] = [p for p in svc["spec"]["ports"] if p["port"] == int(port)]
        assert grpc["appProtocol"] == "grpc" and grpc["targetPort"] == "grpc", address
        selected = [
            w for w in workloads(overlay) if selects(svc["spec"]["selector"], pod_labels(w))
        ]
        assert selected == [by_group[group]], (address, [w["metadata"]["name"] for w in selected])
        w = by_group[group]
        assert w["metadata"]["name"] == host  # its certificate, <Deployment>-tls, is for this name
        assert w["spec"]["replicas"] == 2, host
        [term] = w["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        # Its own pair apart: no other group's pod is in its anti-affinity.
        apart = [x for x in routers if selects(term["labelSelector"]["matchLabels"], pod_labels(x))]
        assert apart == [w], host
    tenants = find(overlay, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_TENANTS"]
    assert set().union(*groups.tenants.values()) <= set(tenants.split(",")), tenants


def test_an_overlay_partitions_the_tenants_across_router_groups() -> None:
    config = find("production-groups", "ConfigMap", "switchboard-router-groups")["data"]
    assert RouterGroups.parse(config["ROUTER_GROUPS"]).groups == ["g1", "g2"]


def _secret_file(workload: dict[str, Any], variable: str) -> tuple[str, str] | None:
    """(Secret, key) whose file the container's `variable` names, through its volume mounts."""
    [container] = containers(workload)
    path = next((e.get("value", "") for e in container["env"] if e["name"] == variable), "")
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        folder = mount["mountPath"].rstrip("/") + "/"
        secret = volumes[mount["name"]].get("secret")
        if secret and path.startswith(folder) and "/" not in path[len(folder) :]:
            return secret["secretName"], path[len(folder) :]
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_recordings_key_and_old_keys_come_from_the_voice_recording_key_secret(
    overlay: str,
) -> None:
    """Whoever seals or plays call recordings (each settings class reading the key) has the
    same key and old keys, from the Secret voice-recording-key: production refuses to start
    without them, and the recordings must open wherever they are played."""
    readers = {
        name for name, cls in SETTINGS.items() if "VOICE_RECORDING_KEY_FILE" in cls.env_names()
    }
    assert readers == {"voice-gateway", "chat"}
    for name in readers:
        for w in workloads_of(overlay, name):
            assert _secret_file(w, "VOICE_RECORDING_KEY_FILE") == ("voice-recording-key", "key")
            assert _secret_file(w, "VOICE_RECORDING_OLD_KEYS_FILE") == (
                "voice-recording-key",
                "old-keys",
            )
            [container] = containers(w)
            assert "VOICE_RECORDING_KEY" not in {e["name"] for e in container["env"]}
