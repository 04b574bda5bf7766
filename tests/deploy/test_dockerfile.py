"""The Dockerfile (for machines with a container engine) builds the images `make images` builds:
one target per service, with the same entrypoint, user, ports and volumes, and the same Debian
packages on the same base."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "scripts" / "images"))

from make_images import BASE_PACKAGES, PROMPTS, SERVICES, UID, workload_of  # noqa: E402

DOCKERFILE = (HERE.parents[1] / "Dockerfile").read_text()


def stage(target: str) -> str:
    """The instructions of one stage, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    match = re.search(rf"^FROM \S+ AS {re.escape(target)}\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    assert match, f"no stage {target} in the Dockerfile"
    return match.group(1)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_each_service_has_a_target_like_its_image(name: str) -> None:
    service = SERVICES[name]
    text = stage(name)
    assert f'ENTRYPOINT ["/app/bin/switchboard-{name}"]' in text
    assert f"USER {UID}:{UID}" in text
    assert f"COPY --from=app-{name} /app /app" in text
    assert f"--package switchboard-{name}" in stage(f"app-{name}")
    pod = workload_of(name)
    [container] = pod["containers"]
    [expose] = re.findall(r"^EXPOSE (.*)$", text, re.M)
    exposed = {p if "/" in p else f"{p}/tcp" for p in expose.split()}
    assert exposed == {
        f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}" for p in container["ports"]
    }
    volumes = set(re.findall(r"^VOLUME (\S+)$", text, re.M)) | {"/tmp"}  # /tmp: in the base
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v or "claim" in v}
    assert volumes == {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty}
    for package in service.packages:
        assert package in text
    for key, value in service.env.items():
        assert f"ENV {key}={value}" in text


def test_the_base_has_the_same_packages_and_user() -> None:
    text = stage("base")
    assert "FROM debian:bookworm-slim AS base" in DOCKERFILE
    for package in BASE_PACKAGES:
        assert package in text
    assert f"switchboard:x:{UID}:{UID}:" in text
    assert PROMPTS in stage("app-voice-gateway")
