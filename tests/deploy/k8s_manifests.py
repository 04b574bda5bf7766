"""The rendered manifests, and what the tests ask of them: which workloads are ours, which settings
class each one's container is read by, which settings a pod cannot do without, and where its
NATS credentials come from."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from k8s_render import Resource, containers, render

from switchboard.case.settings import CaseSettings
from switchboard.chat.settings import ChatSettings
from switchboard.cli.endpoints import SERVICES as SPECS
from switchboard.core import nats_auth
from switchboard.core.settings import ServiceSettings, env_name
from switchboard.email_ingest.settings import EmailIngestSettings
from switchboard.fax.settings import FaxSettings
from switchboard.router.settings import RouterSettings
from switchboard.voice_gateway.settings import VoiceGatewaySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
SETTINGS: dict[str, type[ServiceSettings]] = {
    "router": RouterSettings,
    "case": CaseSettings,
    "chat": ChatSettings,
    "voice-gateway": VoiceGatewaySettings,
    "email-ingest": EmailIngestSettings,
    "fax": FaxSettings,
}
WORKLOADS = {"Deployment", "StatefulSet"}
# What puts a pod under the security model (docs/security.md): its own NATS user over TLS with a
# client certificate, gRPC over mutual TLS with plain-text health for the probes, its token
# secret; and a certificate for each listener that takes one (ServiceSpec.tls_env).
SECURED = {
    "NATS_USER",
    "NATS_PASSWORD",
    "NATS_TLS_CA_FILE",
    "NATS_TLS_CERT_FILE",
    "NATS_TLS_KEY_FILE",
    "GRPC_TLS_CERT_FILE",
    "GRPC_TLS_KEY_FILE",
    "GRPC_TLS_CA_FILE",
    "GRPC_TLS_CLIENT_AUTH",
    "GRPC_HEALTH_PORT",
    "SWITCHBOARD_AUTH_SECRET",
}
# A variable that holds a secret by its name: its value comes from a Secret, never a literal.
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY)$")


@functools.cache
def rendered(overlay: str) -> tuple[Resource, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def service_of(workload: Resource) -> str:
    """Which service a workload runs: its pods' app.kubernetes.io/name (router for each router
    group's Deployment router-<group>), else its own name."""
    return str(pod_labels(workload).get("app.kubernetes.io/name", workload["metadata"]["name"]))


def workloads(overlay: str, ours: bool | None = None) -> list[Resource]:
    """Deployments and StatefulSets; ours=True only Switchboard's services, False only the rest."""
    return [
        r
        for r in rendered(overlay)
        if r["kind"] in WORKLOADS and (ours is None or (service_of(r) in SETTINGS) == ours)
    ]


def workloads_of(overlay: str, service: str) -> list[Resource]:
    """The Deployments or StatefulSets running `service` (one, or a router per group)."""
    return [r for r in workloads(overlay) if service_of(r) == service]


def workload(overlay: str, name: str) -> Resource:
    """The Deployment or StatefulSet `name`."""
    [r] = [r for r in workloads(overlay) if r["metadata"]["name"] == name]
    return r


def find(overlay: str, kind: str, name: str) -> Resource:
    [r] = [r for r in rendered(overlay) if r["kind"] == kind and r["metadata"]["name"] == name]
    return r


def env_names(container: dict[str, Any], resources: Iterable[Resource]) -> set[str]:
    """Every variable the container is given: env, and each key of its envFrom ConfigMaps."""
    maps = {r["metadata"]["name"]: r.get("data", {}) for r in resources if r["kind"] == "ConfigMap"}
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(maps[source["configMapRef"]["name"]])
    return names


def settings_faults(workload: Resource, resources: Iterable[Resource]) -> list[str]:
    """What is wrong with the variables one of our workloads is given: any its settings class
    does not read, and any it cannot do without in a pod (`required_settings`)."""
    name = service_of(workload)
    [container] = workload["spec"]["template"]["spec"]["containers"]
    given = env_names(container, resources)
    unread = sorted(given - SETTINGS[name].env_names())
    missing = sorted(required_settings(SETTINGS[name]) - given)
    unsecured = sorted(secured_settings(name) - given)
    return (
        [f"{name} does not read {unread}"] * bool(unread)
        + [f"{name} cannot run in a pod on the defaults of {missing}"] * bool(missing)
        + [f"{name} runs outside the security model without {unsecured}"] * bool(unsecured)
    )


def secured_settings(name: str) -> set[str]:
    """SECURED, and the certificate settings of the service's own listeners."""
    [spec] = [s for s in SPECS if s.name == name]
    return SECURED | set(spec.tls_env or ())


def nats_credential_faults(workload: Resource, resources: Iterable[Resource]) -> list[str]:
    """What is wrong with how one of our workloads reaches NATS: its user is not its name in
    nats_auth.SERVICES, its password is not that user's key of the Secret nats-users, its URL
    is not TLS or carries credentials, or a secret is written out in its env or a ConfigMap."""
    name = service_of(workload)
    [container] = workload["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    maps = {r["metadata"]["name"]: r.get("data", {}) for r in resources if r["kind"] == "ConfigMap"}
    shared: dict[str, str] = {}
    for source in container.get("envFrom", []):
        shared |= maps[source["configMapRef"]["name"]]
    faults = []
    user = env.get("NATS_USER", {}).get("value")
    if user != name or user not in nats_auth.SERVICES:
        faults.append(f"{name}: NATS_USER is {user!r}, not its own user of nats_auth.SERVICES")
    ref = env.get("NATS_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef")
    if ref != {"name": "nats-users", "key": user}:
        faults.append(f"{name}: NATS_PASSWORD is not the key {user} of the Secret nats-users")
    url = env.get("NATS_URL", {}).get("value") or shared.get("NATS_URL", "")
    if not url.startswith("tls://") or "@" in url:
        faults.append(f"{name}: NATS_URL {url!r} is not tls://host:port")
    for variable, value in [*((e, v.get("value")) for e, v in env.items()), *shared.items()]:
        if value is not None and SECRET_NAME.search(variable) and not str(value).startswith("/"):
            faults.append(f"{name}: {variable} is written out, not taken from a Secret")
    return faults


def required_settings(cls: type[ServiceSettings]) -> set[str]:
    """The settings whose defaults only work on a developer's machine (`make run`): a loopback
    address (a peer, a relay, a listener bound to 127.0.0.1 that no kubelet probe or Service can
    reach) or a path relative to the working directory (the root, read-only in a pod)."""
    needed = set()
    for field in cls.model_fields.values():
        default = str(field.default)
        relative = default.startswith(".run") or ":///.run" in default
        if "127.0.0.1" in default or relative:
            needed.add(env_name(field))
    return needed


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod_labels(workload: Resource) -> dict[str, str]:
    return dict(workload["spec"]["template"]["metadata"].get("labels", {}))


def services_of(overlay: str, workload: Resource) -> list[Resource]:
    """The Services of an overlay whose selector picks this workload's pods."""
    return services_selecting(rendered(overlay), workload)


def services_selecting(resources: Iterable[Resource], workload: Resource) -> list[Resource]:
    labels = pod_labels(workload)
    return [
        r
        for r in resources
        if r["kind"] == "Service" and selects(r["spec"].get("selector", {}), labels)
    ]


def container_port(workload: Resource, target: int | str, protocol: str) -> dict[str, Any] | None:
    """The declared container port a Service's targetPort names (by name or number)."""
    for container in containers(workload):
        for port in container.get("ports", []):
            if port.get("protocol", "TCP") != protocol:
                continue
            if target in (port.get("name"), port["containerPort"]):
                return dict(port)
    return None
