"""The Kubernetes base agrees with the code: every service is deployed, every variable it sets is
one the service reads, probes hit the real gRPC port, and pods run locked down."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from switchboard.case.settings import CaseSettings
from switchboard.chat.settings import ChatSettings
from switchboard.cli.endpoints import SERVICES
from switchboard.core.settings import ServiceSettings
from switchboard.email_ingest.settings import EmailIngestSettings
from switchboard.fax.settings import FaxSettings
from switchboard.router.settings import RouterSettings
from switchboard.voice_gateway.settings import VoiceGatewaySettings

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
SETTINGS: dict[str, type[ServiceSettings]] = {
    "router": RouterSettings,
    "case": CaseSettings,
    "chat": ChatSettings,
    "voice-gateway": VoiceGatewaySettings,
    "email-ingest": EmailIngestSettings,
    "fax": FaxSettings,
}


def documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / name).read_text()) if d]
    return docs


def aliases(cls: type[ServiceSettings]) -> set[str]:
    return cls.env_names()


def deployment(name: str) -> dict[str, Any]:
    [d] = [d for d in documents() if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return d


def test_every_file_in_the_base_is_listed() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}


def test_every_service_is_deployed_with_a_service() -> None:
    docs = documents()
    for spec in SERVICES:
        kinds = {d["kind"] for d in docs if d["metadata"]["name"] == spec.name}
        assert kinds == {"Deployment", "Service"}, spec.name


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_env_names_match_settings_and_probes_hit_the_grpc_port(name: str) -> None:
    spec = next(s for s in SERVICES if s.name == name)
    known = aliases(SETTINGS[name])
    config = next(d for d in documents() if d["kind"] == "ConfigMap")
    container = deployment(name)["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    unknown = (set(env) | set(config["data"])) - known
    assert not unknown, f"{name} does not read {sorted(unknown)}"
    grpc_port = int(env[spec.grpc_env]["value"])
    assert {"name": "grpc", "containerPort": grpc_port} in container["ports"]
    assert container["readinessProbe"]["grpc"]["port"] == grpc_port
    assert container["livenessProbe"]["grpc"]["port"] == grpc_port
    assert env["GRPC_HOST"]["value"] == "0.0.0.0"
    metrics_port = int(env["METRICS_PORT"]["value"])
    assert {"name": "metrics", "containerPort": metrics_port} in container["ports"]
    annotations = deployment(name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert container["image"] == f"switchboard/{name}"


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_pods_run_as_non_root_on_a_read_only_filesystem(name: str) -> None:
    pod = deployment(name)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_image_recipe_builds_each_services_console_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "exec switchboard-$SERVICE" in dockerfile
    for spec in SERVICES:
        project = tomllib.loads((ROOT / "services" / spec.name / "pyproject.toml").read_text())
        assert project["project"]["name"] == f"switchboard-{spec.name}"
        assert f"switchboard-{spec.name}" in project["project"]["scripts"]
