"""The Secrets the manifests name, with real content, made the way docs/deploy.md tells an
operator to: the NATS users, their permissions and passwords by `switchboard nats-config`, a
JetStream key, and certificates of one internal CA (as cert-manager's CA Issuer would write them:
tls.crt, tls.key, ca.crt) for the NATS servers and each service."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from k8s_checks import Trust
from k8s_render import Resource

from switchboard.cli.__main__ import main as switchboard
from switchboard.core import nats_auth
from switchboard.core.certificates import LocalCA

SecretData = dict[str, dict[str, str]]


def _tls(ca: LocalCA, name: str, hosts: list[str]) -> dict[str, str]:
    """A kubernetes.io/tls Secret's keys, with the CA's certificate as cert-manager adds it."""
    issued = ca.issue(name, hosts)
    return {
        "tls.crt": issued.cert_file.read_text(),
        "tls.key": issued.key_file.read_text(),
        "ca.crt": ca.cert_file.read_text(),
    }


def nats_config(folder: Path, tenants: str, router_groups: str = "") -> tuple[str, dict[str, str]]:
    """`switchboard nats-config --authorization-only` as docs/deploy.md runs it: auth.conf, and
    each user's password (its --env-file, from which the Secret nats-users is made); with the
    overlay's ROUTER_GROUPS, every group's consumer and journal are the routers'."""
    env_file = folder / "nats-users.env"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        switchboard(
            ["nats-config", "--credentials", str(folder / "nats-credentials.json"),
             "--env-file", str(env_file), "--tenants", tenants, "--authorization-only",
             "--router-groups", router_groups]
        )  # fmt: skip
    assert done.value.code == 0
    users = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    return out.getvalue(), users


def cluster_secrets(folder: Path, resources: list[Resource] | tuple[Resource, ...]) -> SecretData:
    """The NATS and certificate Secrets for a rendered overlay (its tenants and router groups,
    its StatefulSet's pod names), written under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = LocalCA(folder / "ca", name="Switchboard internal CA")
    [config] = [
        r
        for r in resources
        if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "switchboard-config"
    ]
    groups = "".join(
        r.get("data", {}).get("ROUTER_GROUPS", "") for r in resources if r["kind"] == "ConfigMap"
    )
    auth, users = nats_config(folder, config["data"]["SWITCHBOARD_TENANTS"], groups)
    [nats] = [
        r for r in resources if r["kind"] == "StatefulSet" and r["metadata"]["name"] == "nats"
    ]
    cluster = nats["spec"]["serviceName"]
    # The names clients (nats) and routes (nats-<i>.nats-cluster) call the servers by.
    nats_names = ["nats", "nats.switchboard.svc", f"*.{cluster}", f"*.{cluster}.switchboard.svc"]
    values: SecretData = {
        "nats-auth": {"auth.conf": auth},
        "nats-users": users,
        "nats-jetstream-key": {"key": nats_auth.new_jetstream_key()},
        "nats-tls": _tls(ca, "nats", nats_names),
        "email-smtp-tls": _tls(ca, "email-smtp", ["mx.example.com"]),
    }
    for r in resources:
        if r["kind"] in ("Deployment", "StatefulSet") and r["metadata"]["name"] != "nats":
            name = r["metadata"]["name"]
            values[f"{name}-tls"] = _tls(ca, name, [name, f"{name}.switchboard.svc"])
    return values


def caller_trust(folder: Path) -> Trust:
    """A caller inside the deployment (the checks): the internal CA and a certificate of it."""
    ca = LocalCA(folder / "ca", name="Switchboard internal CA")
    issued = ca.issue("pod-runner", [])
    return Trust(ca.cert_file, issued.cert_file, issued.key_file)
