"""Each of our pods, started from each overlay's rendered manifests the way the kubelet would
(k8s_pods.py: uid 10001, read-only root, emptyDirs, env from ConfigMaps and Secrets, declared
ports), passes its probes, answers on every port of every Service in front of it, listens on
nothing it does not declare, fits its memory request when idle, and stops on SIGTERM within its
grace period."""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_checks import (
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
    services_of,
    services_selecting,
    settings_faults,
)
from k8s_pods import Image, Pod, PodRunner, sandbox_available
from k8s_render import Resource

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


@pytest.fixture
def secret_values(tmp_path: Path, case_store: str) -> Callable[[str], dict[str, str]]:
    """Generated values for each Secret the manifests name (docs/deploy.md says what each is)."""
    key, cert = self_signed(tmp_path)
    values = {
        "switchboard-auth": {"secret": secrets.token_urlsafe(32)},
        "switchboard-case-db": {"url": case_store},
        "switchboard-case-master-key": {"key": base64.b64encode(secrets.token_bytes(32)).decode()},
        "switchboard-fax-webhook": {"secret": secrets.token_urlsafe(32)},
        "voice-sip-tls": {"tls.crt": cert.read_text(), "tls.key": key.read_text()},
        # The operator's own files: here the demo ones, as production would not take them
        # from the image.
        "switchboard-inbox-agents": {"agents.yaml": AGENTS_YAML.read_text(encoding="utf-8")},
        "switchboard-voice": {"voice.yaml": VOICE_YAML.read_text(encoding="utf-8")},
    }
    return values.__getitem__


def run_pod(
    resources: list[Resource] | tuple[Resource, ...],
    workload: Resource,
    nats_server: NatsServer,
    secret_values: Callable[[str], dict[str, str]],
    tmp_path: Path,
    store: Path,
    images: dict[str, Image] | None = None,
) -> tuple[Pod, list[str]]:
    """Start the pod (from its image when `images` are given), check it, stop it: the pod and
    every failure found."""
    runner = PodRunner(
        resources, nats_server.url, secret_values, tmp_path / "pods", (store,), images
    )
    failures = settings_faults(workload, resources)
    pod = runner.start(workload)
    try:
        wait_until_ready(pod)
        for svc in services_selecting(resources, workload):
            for port in svc["spec"]["ports"]:
                if why := check_service_port(pod, port):
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


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_pod_runs_as_the_kubelet_would_and_answers_on_every_port(
    overlay: str, name: str, nats_server: NatsServer, secret_values, tmp_path: Path, store: Path
) -> None:
    workload = find(overlay, "Deployment", name)
    assert services_of(overlay, workload), name
    _, failures = run_pod(rendered(overlay), workload, nats_server, secret_values, tmp_path, store)
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
    _, failures = run_pod(resources, workload, nats_server, secret_values, tmp_path, store)
    for texts in faults:
        assert any(text in failure for failure in failures for text in texts), (texts, failures)
