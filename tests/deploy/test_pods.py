"""Each of our pods, started from each overlay's rendered manifests the way the kubelet would
(k8s_pods.py: uid 10001, read-only root, emptyDirs, env from ConfigMaps and Secrets, declared
ports), passes its probes, answers on every port of every Service in front of it, listens on
nothing it does not declare, fits its memory request when idle, and stops on SIGTERM within its
grace period.

The Secrets hold real content, made as docs/deploy.md tells an operator to (k8s_secrets.py), and
NATS is the overlay's own StatefulSet run by the same pod runner: one server for dev, a cluster of
three for production (and production-groups, whose routers are one Deployment per group), each with the users and permissions of `switchboard nats-config`, TLS for
clients and routes, and its JetStream store encrypted. So each service connects to NATS as its
own user over TLS with no permission refused, serves gRPC over mutual TLS only, and is probed on
its plain-text health port."""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_checks import (
    Trust,
    check_service_port,
    listening_ports,
    memory_bytes,
    quantity_bytes,
    wait_until_ready,
)
from k8s_manifests import (
    OVERLAYS,
    SETTINGS,
    find,
    rendered,
    service_of,
    services_of,
    services_selecting,
    settings_faults,
    workloads_of,
)
from k8s_manifests import workload as manifest_workload
from k8s_pods import POD_IP, Image, Pod, PodRunner, sandbox_available
from k8s_render import Resource
from k8s_secrets import SecretData, caller_trust, cluster_secrets

from switchboard.chat.inbox import directory as agents_directory
from switchboard.core.embedded_nats import NatsServer
from switchboard.testing.databases import POSTGRES_ENV, postgres_database, sqlite_url
from switchboard.testing.tls import self_signed
from switchboard.voice_gateway import config as voice_config

UNAVAILABLE = sandbox_available()
pytestmark = [
    pytest.mark.skipif(bool(UNAVAILABLE), reason=UNAVAILABLE or "-"),
    pytest.mark.timeout(150),
]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Where the case store's SQLite file stands in for PostgreSQL: writable by the pods' uid."""
    folder = tmp_path / "store"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


@pytest.fixture
async def case_store(store: Path) -> AsyncIterator[str]:
    """The case store: a fresh PostgreSQL database when SWITCHBOARD_TEST_POSTGRES_URL is set (as in
    production), else a SQLite file in `store`."""
    if os.environ.get(POSTGRES_ENV):
        async with postgres_database() as url:
            yield url
    else:
        yield sqlite_url(store)


AGENTS_YAML = Path(agents_directory.__file__).with_name("agents.yaml")
VOICE_YAML = Path(voice_config.__file__).with_name("default_config.yaml")


def app_secrets(folder: Path, case_store: str) -> SecretData:
    """Generated values for the services' own Secrets (docs/deploy.md says what each is)."""
    key, cert = self_signed(folder)
    return {
        "switchboard-auth": {"secret": secrets.token_urlsafe(32)},
        "switchboard-case-db": {"url": case_store},
        "switchboard-case-master-key": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        "switchboard-fax-webhook": {"secret": secrets.token_urlsafe(32)},
        # The recordings' key after one change of key: the current one and an old one.
        "voice-recording-key": {
            "key": base64.b64encode(secrets.token_bytes(32)).decode(),
            "old-keys": base64.b64encode(secrets.token_bytes(32)).decode() + "\n",
        },
        "voice-sip-tls": {"tls.crt": cert.read_text(), "tls.key": key.read_text()},
        # The operator's own files: here the demo ones, as production would not take them
        # from the image.
        "switchboard-inbox-agents": {"agents.yaml": AGENTS_YAML.read_text(encoding="utf-8")},
        "switchboard-voice": {"voice.yaml": VOICE_YAML.read_text(encoding="utf-8")},
    }


@pytest.fixture
def secret_values(tmp_path: Path, case_store: str) -> Callable[[str], dict[str, str]]:
    return app_secrets(tmp_path, case_store).__getitem__


@dataclass
class Cluster:
    """One overlay's NATS pods, running with the Secrets made for it."""

    secrets: SecretData
    nats: list[Pod]
    trust: Trust
    logged: dict[str, int] = field(default_factory=dict)  # NATS pod -> log lines seen

    def monitor(self, pod: Pod, endpoint: str) -> dict[str, Any]:
        """A NATS server's monitoring endpoint (varz, jsz, connz?auth=true...)."""
        url = f"http://{POD_IP}:{pod.port('monitor')}/{endpoint}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            return dict(json.load(reply))

    def connections(self, user: str) -> list[dict[str, Any]]:
        """The NATS servers' open client connections of `user` (monitoring's /connz)."""
        found = []
        for pod in self.nats:
            conns = self.monitor(pod, "connz?auth=true").get("connections") or []
            found += [c for c in conns if c.get("authorized_user") == user]
        return found

    async def connect(
        self, user: str, password: str, certificate: bool = True, tls: bool = True
    ) -> nats.NATS:
        """A client of the first NATS server, checking its certificate for the name `nats`."""
        pod = self.nats[0]
        ca = self.secrets["nats-tls"]["ca.crt"]
        options: dict[str, Any] = {"user": user, "password": password} if user else {}
        if tls:
            context = ssl.create_default_context(cadata=ca)
            if certificate:
                context.load_cert_chain(self.trust.cert_file, self.trust.key_file)
            options |= {"tls": context, "tls_hostname": "nats"}
        scheme = "tls" if tls else "nats"
        return await nats.connect(
            f"{scheme}://{POD_IP}:{pod.port('client')}",
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=3,
            **options,
        )

    def new_violations(self) -> list[str]:
        """Permission violations the servers logged since the last call."""
        found = []
        for pod in self.nats:
            lines = pod.log.read_text(errors="replace").splitlines()
            found += [line for line in lines[self.logged.get(pod.name, 0) :] if "Violation" in line]
            self.logged[pod.name] = len(lines)
        return found


class Clusters:
    """Each overlay's NATS, started on first use and kept for the module (as a cluster's NATS
    outlives the services' pods)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: dict[str, Cluster] = {}

    def __call__(self, overlay: str) -> Cluster:
        if overlay not in self.running:
            self.running[overlay] = self._start(overlay)
        return self.running[overlay]

    def _start(self, overlay: str) -> Cluster:
        folder = self.folder / overlay
        values = cluster_secrets(folder / "secrets", rendered(overlay))
        runner = PodRunner(rendered(overlay), None, values.__getitem__, folder / "pods")
        cluster = Cluster(values, [], caller_trust(folder / "secrets"))
        self.running[overlay] = cluster
        cluster.nats = runner.start_all(find(overlay, "StatefulSet", "nats"))
        for pod in cluster.nats:
            wait_until_ready(pod)
        return cluster

    def stop(self) -> None:
        for cluster in self.running.values():
            for pod in cluster.nats:
                pod.stop()


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clusters]:
    running = Clusters(tmp_path_factory.mktemp("clusters"))
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("overlay", OVERLAYS)
async def test_nats_runs_from_the_manifests_with_users_tls_and_encryption(
    overlay: str, clusters: Clusters
) -> None:
    """The overlay's NATS StatefulSet, run with its Secrets: TLS required of clients and routes,
    both showing a certificate of the internal CA; the cluster formed (production); the store
    encrypted; only the users of `switchboard nats-config`, each with its own password."""
    cluster = clusters(overlay)
    replicas = find(overlay, "StatefulSet", "nats")["spec"]["replicas"]
    assert len(cluster.nats) == replicas == (1 if overlay == "dev" else 3)
    for pod in cluster.nats:
        varz = cluster.monitor(pod, "varz")
        assert varz["tls_required"] and varz["tls_verify"], pod.name
        if replicas > 1:
            assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"], pod.name
            meta = cluster.monitor(pod, "jsz")["meta_cluster"]
            assert meta["cluster_size"] == replicas and meta["leader"], meta
        assert "Encryption:      ChaCha20-Poly1305" in pod.log.read_text(), pod.name
    users = cluster.secrets["nats-users"]
    nc = await cluster.connect("fax", users["fax"])
    await nc.close()
    refused: list[dict[str, Any]] = [
        {"user": "", "password": ""},  # anonymous
        {"user": "fax", "password": users["chat"]},  # another user's password
        {"user": "fax", "password": users["fax"], "certificate": False},
        {"user": "fax", "password": users["fax"], "tls": False},
    ]
    for attempt in refused:
        with pytest.raises((nats.errors.Error, OSError)):
            nc = await cluster.connect(**attempt)
            await nc.close()
            pytest.fail(f"admitted {attempt}")


def run_pod(
    resources: list[Resource] | tuple[Resource, ...],
    workload: Resource,
    runner: PodRunner,
    trust: Trust | None,
    while_running: Callable[[Pod], list[str]] = lambda pod: [],
) -> tuple[Pod, list[str]]:
    """Start the pod, check it (and `while_running`, once it is ready), stop it: the pod and
    every failure found."""
    failures = settings_faults(workload, resources)
    pod = runner.start(workload)
    try:
        wait_until_ready(pod)
        for svc in services_selecting(resources, workload):
            for port in svc["spec"]["ports"]:
                if why := check_service_port(pod, svc["metadata"]["name"], port, trust):
                    failures.append(f"Service {svc['metadata']['name']} {port['name']}: {why}")
        declared = {
            (pod.ports[p["containerPort"]], p.get("protocol", "TCP"))
            for p in pod.container.get("ports", [])
        }
        for port, proto in sorted(listening_ports(pod) - declared):
            failures.append(f"listens on {port}/{proto}, which no containerPort declares")
        # The request is what the scheduler reserves: an idle pod must fit in it.
        request = quantity_bytes(pod.container["resources"]["requests"]["memory"])
        if (used := memory_bytes(pod)) > request:
            failures.append(f"uses {used >> 20} MiB idle, over its request of {request >> 20} MiB")
        failures += while_running(pod)
    except AssertionError as e:
        failures.append(str(e))
    finally:
        pod.stop()
    grace = workload["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    if pod.exit_code != 0 and not failures:
        failures.append(f"exited {pod.exit_code} on SIGTERM:\n{pod.log_tail()}")
    if pod.stop_seconds >= grace:
        failures.append(f"took {pod.stop_seconds:.0f}s to stop (grace {grace}s)")
    return pod, failures


def run_service_pod(
    overlay: str,
    name: str,
    cluster: Cluster,
    folder: Path,
    store: Path,
    case_store: str,
    images: dict[str, Image] | None = None,
) -> tuple[Pod, list[str]]:
    """The service's pod of the overlay (from its image, with `images`), run against the
    overlay's NATS with the Secrets made for it and checked as run_pod does, and connected to
    NATS as its own user over TLS with nothing refused: the pod and every failure found."""
    workload = manifest_workload(overlay, name)
    user = service_of(workload)
    values = {**cluster.secrets, **app_secrets(folder, case_store)}
    runner = PodRunner(
        rendered(overlay),
        None,
        values.__getitem__,
        folder / "pods",
        (store,),
        tuple(cluster.nats),
        images,
    )
    cluster.new_violations()

    def on_nats_as_itself(pod: Pod) -> list[str]:
        """Connected as its own user over TLS (the servers require both: this says it took)."""
        seen = cluster.connections(user)
        if not seen:
            return [f"no connection to NATS as the user {user!r}"]
        return [f"TLS not in use on {c}" for c in seen if not c.get("tls_version")]

    pod, failures = run_pod(rendered(overlay), workload, runner, cluster.trust, on_nats_as_itself)
    failures += [f"NATS refused: {v}" for v in cluster.new_violations()]
    return pod, failures


# Each overlay's pods: each service's workload (a router per group).
PODS = [
    (overlay, w["metadata"]["name"])
    for overlay in OVERLAYS
    for service in sorted(SETTINGS)
    for w in workloads_of(overlay, service)
]


def test_every_router_group_is_among_the_pods_run() -> None:
    assert {"router-g1", "router-g2"} <= {
        n for overlay, n in PODS if overlay == "production-groups"
    }


@pytest.mark.parametrize(("overlay", "name"), PODS)
def test_the_pod_runs_as_the_kubelet_would_and_answers_on_every_port(
    overlay: str,
    name: str,
    clusters: Clusters,
    tmp_path: Path,
    store: Path,
    case_store: str,
) -> None:
    assert services_of(overlay, manifest_workload(overlay, name)), name
    cluster = clusters(overlay)
    _, failures = run_service_pod(overlay, name, cluster, tmp_path, store, case_store)
    assert not failures, "\n".join(failures)


BEFORE = Path(__file__).resolve().parent / "fixtures" / "before-issue-17.yaml"


@pytest.mark.parametrize(
    ("name", "faults"),
    [
        # Prompts were written under the working directory: the read-only root. Nothing set the
        # prompt folder, the SIP address or the router's.
        (
            "voice-gateway",
            [
                # (the demo phones refused in production now stop it before it writes)
                ["Read-only file system: '.run'", "VOICE_CONFIG_FILE is unset"],
                ["defaults of ['VOICE_PROMPTS_DIR', 'VOICE_ROUTER_ADDR', 'VOICE_SIP_HOST']"],
            ],
        ),
        # SMTP listened (on 127.0.0.1:2525) with no port declared or exposed; no relay was set.
        (
            "email-ingest",
            [
                ["listens on 2525/TCP, which no containerPort declares", "in use"],
                ["defaults of ['EMAIL_RELAY_HOST', 'EMAIL_SMTP_HOST']"],
            ],
        ),
    ],
)
def test_the_runner_catches_what_the_manifests_got_wrong_before(
    name: str,
    faults: list[list[str]],
    nats_server: NatsServer,
    secret_values,
    tmp_path: Path,
    store: Path,
) -> None:
    """The manifests as they were (fixtures/before-issue-17.yaml) fail the pod runner, for each
    of these reasons (any one of the texts of each)."""
    resources = [d for d in yaml.safe_load_all(BEFORE.read_text()) if d]
    [workload] = [
        r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == name
    ]
    runner = PodRunner(resources, nats_server.url, secret_values, tmp_path / "pods", (store,))
    _, failures = run_pod(resources, workload, runner, None)
    for texts in faults:
        assert any(text in failure for failure in failures for text in texts), (texts, failures)
