"""The images `make images` built (build/images/<service>, OCI layouts), run for real: each is
unpacked layer by layer as a runtime would, and its pod from the dev overlay (which names
switchboard/<service>:dev) runs from it under bubblewrap as uid 10001 on a read-only root, with
tmpfs for the declared volumes, against the dev overlay's own NATS (its StatefulSet, with TLS,
users and the Secrets test_pods.py makes), and must pass the same checks as in test_pods.py
(probes, every Service port over mutual TLS, NATS as its own user, nothing undeclared, memory,
SIGTERM). The fax image must read Korean with its own tesseract.

Run by `make images-test` (SWITCHBOARD_IMAGES=build/images), never by `make test`: it needs the
images, which take minutes and a few hundred megabytes to build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "scripts" / "images")]

from k8s_manifests import workload  # noqa: E402
from k8s_pods import Image, sandbox_available  # noqa: E402
from make_images import PROMPTS, SERVICES, UID, workload_of, writable_paths  # noqa: E402
from oci import read_image, unpack  # noqa: E402
from test_pods import Clusters, case_store, clusters, run_service_pod, store  # noqa: E402

# The fixtures test_pods.py defines, used here as they are there.
__all__ = ["case_store", "clusters", "store"]

IMAGES = (
    Path(os.environ["SWITCHBOARD_IMAGES"]).resolve() if "SWITCHBOARD_IMAGES" in os.environ else None
)
TAG = os.environ.get("SWITCHBOARD_IMAGE_TAG", "dev")
UNAVAILABLE = sandbox_available()
pytestmark = [
    pytest.mark.skipif(IMAGES is None, reason="make images-test runs these (SWITCHBOARD_IMAGES)"),
    pytest.mark.skipif(bool(UNAVAILABLE), reason=UNAVAILABLE or "-"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Image]:
    """Service -> its image unpacked into a fresh root file system (once per module)."""
    done: dict[str, Image] = {}

    def get(name: str) -> Image:
        if name not in done:
            assert IMAGES is not None
            layout = IMAGES / name
            assert (layout / "index.json").exists(), f"{layout}: not built (make images)"
            rootfs = tmp_path_factory.mktemp(name) / "rootfs"
            done[name] = Image(rootfs, unpack(layout, rootfs)["config"])
        return done[name]

    return get


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_image_declares_what_its_workload_uses(name: str) -> None:
    assert IMAGES is not None
    manifest, config = read_image(IMAGES / name)
    index = json.loads((IMAGES / name / "index.json").read_text())
    annotations = index["manifests"][0]["annotations"]
    assert annotations["org.opencontainers.image.ref.name"] == TAG
    # The dev overlay pulls exactly this reference.
    [container] = workload("dev", name)["spec"]["template"]["spec"]["containers"]
    assert annotations["io.containerd.image.name"] == f"docker.io/{container['image']}"
    c = config["config"]
    assert c["User"] == f"{UID}:{UID}"
    assert c["Entrypoint"] == [f"/app/bin/switchboard-{name}"]
    pod = workload_of(name)
    [base_container] = pod["containers"]
    declared = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}" for p in base_container["ports"]}  # fmt: skip
    assert set(c["ExposedPorts"]) == declared
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v or "claim" in v}
    mounts = {m["mountPath"] for m in base_container["volumeMounts"] if m["name"] in empty}
    assert set(c["Volumes"]) == mounts
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in manifest["layers"])
    # `docker load` reads manifest.json: its blobs are the layout's.
    [docker] = json.loads((IMAGES / name / "manifest.json").read_text())
    assert docker["RepoTags"] == [container["image"]]
    blobs = [
        f"blobs/sha256/{layer['digest'].removeprefix('sha256:')}" for layer in manifest["layers"]
    ]
    assert docker["Layers"] == blobs


def test_every_image_shares_one_base_layer() -> None:
    assert IMAGES is not None
    bases = {read_image(IMAGES / name)[0]["layers"][0]["digest"] for name in SERVICES}
    assert len(bases) == 1, bases


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_nothing_but_the_declared_volumes_is_writable(name: str, unpacked) -> None:
    image = unpacked(name)
    assert writable_paths(image.rootfs, set(image.config["Volumes"])) == []


def test_the_voice_image_holds_its_prompts(unpacked) -> None:
    """The synthesised prompts' cache, in the declared volume the gateway reads it from (a Docker
    volume starts with it; an emptyDir makes the gateway synthesise them again)."""
    image = unpacked("voice-gateway")
    assert image.config["Volumes"].keys() >= {PROMPTS}
    assert f"VOICE_PROMPTS_DIR={PROMPTS}" in image.config["Env"]
    folder = image.rootfs / PROMPTS.lstrip("/")
    cached = {p.stem.split("-")[0] for p in (folder / "cache").glob("*.wav")}
    assert {"ko", "cmn", "en", "ja"} <= cached  # espeak-ng spoke every language at build
    assert folder.stat().st_uid == UID


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_the_image_runs_as_the_kubelet_would_and_answers_on_every_port(
    name: str,
    unpacked,
    clusters: Clusters,
    tmp_path: Path,
    store: Path,
    case_store: str,
) -> None:
    """The dev overlay's pod (the voice gateway's StatefulSet's first), run from the image
    against the dev overlay's own NATS (TLS, its users, Secrets made as docs/deploy.md says), and
    checked as test_pods.py checks the pods run from the workspace."""
    [container] = workload("dev", name)["spec"]["template"]["spec"]["containers"]
    images = {container["image"]: unpacked(name)}
    pod, failures = run_service_pod(
        "dev", name, clusters("dev"), tmp_path, store, case_store, images
    )
    assert not failures, "\n".join(failures) + "\n" + pod.log_tail()
    # It ran the image's entrypoint, from the image's root, not the workspace's.
    assert pod.argv[pod.argv.index("--") + 1] == f"/app/bin/switchboard-{name}"
    assert pod.argv[1:4] == ["--ro-bind", str(images[container["image"]].rootfs), "/"]


@pytest.mark.parametrize("name", ["router", "fax"])
def test_other_tools_read_the_layout_and_the_docker_archive(name: str, tmp_path: Path) -> None:
    """skopeo reads the OCI layout and the `docker load` tarball as the same image; umoci unpacks
    the layout into a runtime bundle whose process is the entrypoint as uid 10001."""
    assert IMAGES is not None
    manifest, config = read_image(IMAGES / name)
    layers = [layer["digest"] for layer in manifest["layers"]]
    oci = json.loads(subprocess.run(
        ["skopeo", "inspect", f"oci:{IMAGES / name}:{TAG}"], capture_output=True, text=True,
        check=True).stdout)  # fmt: skip
    archive = json.loads(subprocess.run(
        ["skopeo", "inspect", f"docker-archive:{IMAGES / name}.tar"], capture_output=True,
        text=True, check=True).stdout)  # fmt: skip
    assert oci["Layers"] == layers
    # The archive names its layers by their uncompressed digests, as `docker load` does.
    assert archive["Layers"] == config["rootfs"]["diff_ids"]
    assert archive["Env"] == oci["Env"] == config["config"]["Env"]
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{IMAGES / name}:{TAG}", str(bundle)],
                   check=True, capture_output=True)  # fmt: skip
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["user"]["uid"] == UID
    assert spec["process"]["user"]["gid"] == UID
    assert spec["process"]["args"] == [f"/app/bin/switchboard-{name}"]
    assert (bundle / "rootfs" / "app" / "bin" / f"switchboard-{name}").is_file()


KOREAN_OCR = """
import asyncio, io, json, subprocess
from switchboard.fax import samples
from switchboard.fax.adapters.ocr import Tesseract
page = samples.fax_page(samples.KOREAN)
png = io.BytesIO()
page.save(png, "PNG")
text = asyncio.run(Tesseract(workers=1).read(png.getvalue()))
langs = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True).stdout
print(json.dumps({"text": text.text, "languages": text.languages, "installed": langs.split()}))
"""


def test_the_fax_image_reads_korean_with_its_own_tesseract(unpacked) -> None:
    """A Korean page rendered in the image's Noto CJK font (samples.fax_page), read by the fax
    service's OCR adapter with the image's tesseract and language packs, as uid 10001 on a
    read-only root."""
    image = unpacked("fax")
    env = dict(e.split("=", 1) for e in image.config["Env"])
    argv = ["bwrap", "--ro-bind", str(image.rootfs), "/", "--dev", "/dev", "--proc", "/proc",
            "--perms", "1777", "--tmpfs", "/tmp", "--unshare-pid", "--die-with-parent",
            "--clearenv"]  # fmt: skip
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv += ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", "--no-new-privs"]
    argv += ["/app/bin/python", "-c", KOREAN_OCR]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"eng", "kor", "chi_sim", "chi_tra", "jpn", "osd"} <= set(page["installed"]), page
    # (tesseract's script detection declines a page this short: every model reads it, kor too.)
    assert "kor" in page["languages"].split("+"), page
    read = page["text"].replace(" ", "")
    for line in ["청구서문의", "이번달요금청구서가", "잘못나왔습니다."]:
        assert line in read, page
