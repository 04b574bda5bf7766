"""Build one OCI image per Switchboard service without a container engine (`make images`).

    python scripts/images/make_images.py [--tag dev] [--out build/images] [SERVICE ...]

- base layer, shared: Debian bookworm by `debootstrap --variant=minbase` from the mirror this
  machine's apt uses, with python3 (3.11, which requires-python >=3.11 accepts), tzdata (the
  case reports' time zones) and ca-certificates, upgraded from bookworm-updates and
  bookworm-security, with the user switchboard (uid and gid 10001). Cached under
  OUT/.cache/base-<key>: a rebuild reuses it until the suite, mirror or package list changes.
- packages layer (fax and voice-gateway): for fax tesseract-ocr with eng, kor, chi_sim,
  chi_tra, jpn and fonts-noto-cjk, for voice-gateway espeak-ng (its spoken prompts), installed by
  apt-get in the image.
- app layer: a virtualenv in /app made by uv with the image's own python, holding the service's
  wheel, the workspace libraries it uses (built by `uv build`) and its locked dependencies
  (`uv export`, hashes required, binary wheels only); for voice-gateway also the synthesised
  prompts' cache in /var/lib/switchboard/prompts.

Each stage runs in bubblewrap with the image's root file system as / (as root, with the
network), and its layer is what it changed. Ports and volumes come from the service's
Deployment (StatefulSet for voice-gateway) in deploy/k8s/base, so the image declares what the
manifests mount.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from oci import Layer, changes, snapshot, write_layer, write_layout

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "tzdata", "ca-certificates")
UID = 10001
# Bump when the base recipe changes, so the cached base is rebuilt.
BASE_RECIPE = 1
PATH = "/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROMPTS = "/var/lib/switchboard/prompts"
# Calls being recorded grow here until they end and are sealed into the object store.
RECORDINGS = "/var/spool/switchboard/recordings"
GENERATE_PROMPTS = (
    "from pathlib import Path; from switchboard.voice_gateway.media.prompts import Prompts; "
    f"Prompts(Path({PROMPTS!r})).load()"
)


@dataclass(frozen=True)
class Service:
    name: str
    packages: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    # Run with the image's /app/bin/python after the install, as root (output in the layer).
    prepare: tuple[str, ...] = ()
    # Declared volumes made writable for uid 10001 (a docker volume copies the owner).
    owned_volumes: tuple[str, ...] = ()


SERVICES = {
    s.name: s
    for s in (
        Service("router"),
        Service("case"),
        Service("chat"),
        Service("email-ingest"),
        Service(
            "voice-gateway",
            packages=("espeak-ng",),
            env={"VOICE_PROMPTS_DIR": PROMPTS, "VOICE_RECORDINGS_DIR": RECORDINGS},
            prepare=(GENERATE_PROMPTS, f"import os; os.makedirs({RECORDINGS!r}, exist_ok=True)"),
            owned_volumes=(PROMPTS, RECORDINGS),
        ),
        Service(
            "fax",
            packages=(
                "tesseract-ocr",
                "tesseract-ocr-eng",
                "tesseract-ocr-kor",
                "tesseract-ocr-chi-sim",
                "tesseract-ocr-chi-tra",
                "tesseract-ocr-jpn",
                "fonts-noto-cjk",
            ),
        ),
    )
}


def log(message: str) -> None:
    print(f"images: {message}", flush=True)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, **kwargs)


def apt_mirrors() -> dict[str, str]:
    """Suite -> URI from this machine's apt sources (deb822 and one-line), for bookworm."""
    found: dict[str, str] = {}
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip()] = value.strip()
            if "deb" in fields.get("Types", "").split() and "Enabled" not in fields:
                for suite in fields.get("Suites", "").split():
                    found.setdefault(suite, fields["URIs"].split()[0])
    for path in [Path("/etc/apt/sources.list"), *Path("/etc/apt").glob("sources.list.d/*.list")]:
        if path.exists():
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb":
                    uri, suite = (parts[2], parts[3]) if parts[1].startswith("[") else parts[1:3]
                    found.setdefault(suite, uri)
    return {s: u.rstrip("/") for s, u in found.items() if s.startswith(SUITE)}


def sandbox(rootfs: Path, command: str, env: dict[str, str], binds: list[str] = ()) -> None:  # type: ignore[assignment]
    """Run `command` (sh -c) as root in rootfs, writable, with the network and a fresh /tmp."""
    argv = ["bwrap", "--bind", str(rootfs), "/", "--dev", "/dev", "--proc", "/proc"]
    argv += [
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        "/etc/resolv.conf",
        "/etc/resolv.conf",
    ]
    argv += ["--cap-add", "ALL", "--unshare-pid", "--die-with-parent", "--clearenv", *binds]
    base = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    for key, value in {**base, **env}.items():
        argv += ["--setenv", key, value]
    run([*argv, "/bin/sh", "-euc", command])


def apt_install(rootfs: Path, packages: tuple[str, ...], upgrade: bool = False) -> None:
    steps = ["apt-get update -qq"]
    if upgrade:
        steps.append("apt-get -y -qq -o Dpkg::Options::=--force-confold dist-upgrade")
    if packages:
        steps.append(f"apt-get install -y -qq --no-install-recommends {' '.join(packages)}")
    steps.append("apt-get clean")
    sandbox(rootfs, " && ".join(steps), {})
    tidy(rootfs)


def tidy(rootfs: Path) -> None:
    """Drop what a running service never reads and what differs between two builds: apt lists
    and caches, logs, manuals, documentation except the copyright files."""
    for pattern in ("var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "var/log/**/*.log",
                    "var/log/apt/*", "usr/share/man/*", "usr/share/info/*",
                    "usr/share/lintian/*", "root/.cache", "app/.lock"):  # fmt: skip
        for path in rootfs.glob(pattern):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and path.name != "partial":
                shutil.rmtree(path)
    for doc in (rootfs / "usr/share/doc").glob("*"):
        if doc.is_dir() and not doc.is_symlink():
            for item in doc.iterdir():
                if item.name == "copyright":
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink()


def writable_paths(rootfs: Path, volumes: set[str], uid: int = UID) -> list[str]:
    """Paths uid (in group uid) could write outside the declared volumes and the runtime's
    mounts: owned by it, or group- or world-writable (symlinks aside). Empty for a good image."""
    skip = {*volumes, "/dev", "/proc", "/sys"}
    found = []
    for dirpath, dirnames, filenames in os.walk(rootfs):
        folder = "/" + os.path.relpath(dirpath, rootfs).removeprefix(".").lstrip("/")
        dirnames[:] = [d for d in dirnames if os.path.join(folder, d) not in skip]
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode):
                continue
            if (
                st.st_uid == uid
                or st.st_mode & stat.S_IWOTH
                or (st.st_gid == uid and st.st_mode & stat.S_IWGRP)
            ):
                found.append(os.path.join(folder, name))
    return sorted(found)


def base_layer(cache: Path, epoch: int) -> tuple[Path, Layer]:
    """The debootstrapped root file system and its layer, built once per recipe."""
    mirrors = apt_mirrors()
    if SUITE not in mirrors:
        raise SystemExit(f"no apt source for {SUITE} in /etc/apt (found {mirrors})")
    recipe = {"suite": SUITE, "mirrors": mirrors, "packages": BASE_PACKAGES, "uid": UID,
              "recipe": BASE_RECIPE}  # fmt: skip
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    folder = cache / f"base-{key}"
    done = folder / "layer.json"
    if done.exists():
        layer = Layer(**{**json.loads(done.read_text()), "path": Path(folder / "layer.tar.gz")})
        log(f"base: cached {folder.name} ({layer.size >> 20} MiB)")
        return folder / "rootfs", layer
    if folder.exists():
        shutil.rmtree(folder)
    rootfs = folder / "rootfs"
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    log(f"base: debootstrap {SUITE} from {mirrors[SUITE]}")
    run(["debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
         f"--cache-dir={(cache / 'debs').resolve()}", SUITE, str(rootfs), mirrors[SUITE]])  # fmt: skip
    lines = [f"deb {uri} {suite} main" for suite, uri in sorted(mirrors.items())]
    (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    apt_install(rootfs, (), upgrade=True)
    with (rootfs / "etc/passwd").open("a") as f:
        f.write(f"switchboard:x:{UID}:{UID}:Switchboard:/:/usr/sbin/nologin\n")
    with (rootfs / "etc/group").open("a") as f:
        f.write(f"switchboard:x:{UID}:\n")
    with (rootfs / "etc/shadow").open("a") as f:
        f.write("switchboard:!:19000::::::\n")
    # The runtime mounts its own; the build machine's must not ship.
    for name in ("etc/resolv.conf", "etc/hostname", "etc/hosts"):
        (rootfs / name).unlink(missing_ok=True)
        (rootfs / name).touch(mode=0o644)
    # Nothing but the declared volumes is writable: /tmp stays 1777 (every service's volume).
    for dirpath, dirnames, filenames in os.walk(rootfs):
        if Path(dirpath) in (rootfs / "dev", rootfs / "proc", rootfs / "sys", rootfs / "tmp"):
            dirnames.clear()
            continue
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & stat.S_IWOTH:
                path.chmod(stat.S_IMODE(mode) & ~stat.S_IWOTH)
    layer = write_layer(rootfs, *changes(None, rootfs), folder, epoch)
    layer.path.rename(folder / "layer.tar.gz")
    fields = {k: v for k, v in layer.__dict__.items() if k != "path"}
    done.write_text(json.dumps(fields))
    log(f"base: {layer.size >> 20} MiB compressed")
    return rootfs, Layer(**fields, path=folder / "layer.tar.gz")


def wheels(service: Service, folder: Path, epoch: int) -> None:
    """The service's wheel and its workspace libraries' (uv build), and requirements.txt with
    the locked versions and hashes of everything else (uv export)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    package = f"switchboard-{service.name}"
    common = ["--package", package, "--no-dev", "--locked", "--format", "requirements-txt"]
    listed = run(["uv", "export", *common, "--no-hashes"], capture_output=True, cwd=ROOT).stdout
    members = [line.split()[1] for line in listed.splitlines() if line.startswith("-e ")]
    run(["uv", "export", *common, "--no-emit-workspace", "--quiet", "-o",
         str(folder / "requirements.txt")], cwd=ROOT)  # fmt: skip
    for member in members:
        run(["uv", "build", "--wheel", "--quiet", "--out-dir", str(folder), member], cwd=ROOT,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)})  # fmt: skip
    for wheel in folder.glob("*.whl"):
        # uv records a local wheel's mtime in the install (uv_cache.json): the commit's time.
        os.utime(wheel, (epoch, epoch))
    log(f"{service.name}: wheels of {', '.join(Path(m).name for m in members)}")


def uv_binary() -> Path:
    """The uv executable itself (`uv run` names it in $UV; a shim on PATH would not run in the
    image)."""
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        raise SystemExit("uv not found: run through `uv run` (make images)")
    return Path(found).resolve()


def install_app(service: Service, rootfs: Path, folder: Path, epoch: int) -> None:
    cache = run(["uv", "cache", "dir"], capture_output=True).stdout.strip()
    binds = ["--ro-bind", str(uv_binary()), "/tmp/uv", "--ro-bind", str(folder), "/tmp/wheels",
             "--bind", cache, "/tmp/uv-cache"]  # fmt: skip
    env = {"UV_CACHE_DIR": "/tmp/uv-cache", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1",
           # Bytecode checked by hash, not by the install's mtimes: the layer is reproducible.
           "SOURCE_DATE_EPOCH": str(epoch)}  # fmt: skip
    certificates = os.environ.get("SSL_CERT_FILE")
    if certificates and Path(certificates).is_file():
        binds += ["--ro-bind", certificates, "/tmp/ca-certificates.crt"]
        env["SSL_CERT_FILE"] = "/tmp/ca-certificates.crt"
    install = "/tmp/uv pip install --python /app/bin/python --compile-bytecode --link-mode=copy"
    steps = [
        "/tmp/uv venv --quiet --python /usr/bin/python3 /app",
        f"{install} --quiet --only-binary :all: --require-hashes -r /tmp/wheels/requirements.txt",
        # --refresh: the wheels' mtime is the commit's, so uv must not trust its cache for them.
        f"{install} --quiet --no-deps --no-index --refresh /tmp/wheels/*.whl",
        *(f"/app/bin/python -c {shell_quote(code)}" for code in service.prepare),
    ]
    sandbox(rootfs, " && ".join(steps), env, binds)
    for volume in service.owned_volumes:  # with what `prepare` wrote in it
        top = rootfs / volume.lstrip("/")
        for path in [top, *top.rglob("*")]:
            os.chown(path, UID, UID, follow_symlinks=False)
    # uv notes when it installed a local wheel (uv_cache.json, for its own freshness checks):
    # dropped, with its RECORD line, so the layer depends on the commit alone.
    for note in (rootfs / "app/lib").glob("python3*/site-packages/*.dist-info/uv_cache.json"):
        record = note.with_name("RECORD")
        lines = record.read_text().splitlines(keepends=True)
        record.write_text(
            "".join(x for x in lines if not x.startswith(f"{note.parent.name}/uv_cache.json,"))
        )
        note.unlink()
    tidy(rootfs)


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def workload_of(name: str) -> dict[str, Any]:
    """The pod template of the service's Deployment or StatefulSet in deploy/k8s/base (its
    container and its volumes; a StatefulSet's volume claims are volumes too)."""
    path = ROOT / "deploy/k8s/base" / f"{name}.yaml"
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] in ("Deployment", "StatefulSet"):
            spec: dict[str, Any] = dict(doc["spec"]["template"]["spec"])
            claims = doc["spec"].get("volumeClaimTemplates", [])
            claimed = [{"name": c["metadata"]["name"], "claim": True} for c in claims]
            spec["volumes"] = [*spec.get("volumes", []), *claimed]
            return spec
    raise SystemExit(f"{path}: no Deployment or StatefulSet")


def image_config(service: Service, epoch: int, history: list[str]) -> dict[str, Any]:
    pod = workload_of(service.name)
    [container] = pod["containers"]
    # What the pod may write: its emptyDirs and volume claims.
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v or "claim" in v}
    volumes = sorted(
        m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty
    )
    ports: dict[str, dict[str, str]] = {f"{p['containerPort']}/{p.get('protocol', 'TCP').lower()}": {}
             for p in container.get("ports", [])}  # fmt: skip
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    revision = run(["git", "rev-parse", "HEAD"], capture_output=True, cwd=ROOT).stdout.strip()
    env = {"PATH": PATH, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/",
           "LANG": "C.UTF-8", **service.env}  # fmt: skip
    return {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": f"{UID}:{UID}",
            "Entrypoint": [f"/app/bin/switchboard-{service.name}"],
            "Cmd": [],
            "Env": [f"{k}={v}" for k, v in env.items()],
            "ExposedPorts": ports,
            "Volumes": {v: {} for v in volumes},
            "WorkingDir": "/",
            "StopSignal": "SIGTERM",
            "Labels": {
                "org.opencontainers.image.title": f"switchboard-{service.name}",
                "org.opencontainers.image.revision": revision,
            },
        },
        "history": [{"created": created, "created_by": step} for step in history],
    }


def build(service: Service, out: Path, tag: str, epoch: int) -> dict[str, Any]:
    cache = out / ".cache"
    base_root, base = base_layer(cache, epoch)
    started = time.monotonic()
    stage = cache / "stage" / service.name
    if stage.exists():
        shutil.rmtree(stage)
    stage.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", str(base_root), str(stage)])
    layers = [base]
    history = [f"debootstrap --variant=minbase --include={','.join(BASE_PACKAGES)} {SUITE}"]
    before = snapshot(stage)
    blobs = cache / "blobs"
    if service.packages:
        apt_install(stage, service.packages)
        layers.append(write_layer(stage, *changes(before, stage), blobs, epoch))
        history.append(f"apt-get install --no-install-recommends {' '.join(service.packages)}")
        before = snapshot(stage)
    wheels(service, cache / "wheels" / service.name, epoch)
    install_app(service, stage, cache / "wheels" / service.name, epoch)
    layers.append(write_layer(stage, *changes(before, stage), blobs, epoch))
    history.append(f"uv venv /app; uv pip install switchboard-{service.name} (uv.lock)")
    config = image_config(service, epoch, history)
    volumes = set(config["config"]["Volumes"])
    if bad := writable_paths(stage, volumes):
        raise SystemExit(f"{service.name}: writable outside the volumes {sorted(volumes)}: {bad}")
    name = f"switchboard/{service.name}"
    annotations = {"org.opencontainers.image.title": name, "org.opencontainers.image.created":
                   config["created"]}  # fmt: skip
    write_layout(out / service.name, layers, config, name, tag, annotations)
    shutil.rmtree(stage)
    for layer in layers[1:]:
        layer.path.unlink()  # the layout holds it now
    size = sum(layer.size for layer in layers)
    unpacked = sum(layer.unpacked for layer in layers)
    log(f"{name}:{tag}: {len(layers)} layers, {size / 2**20:.0f} MiB compressed, "
        f"{unpacked / 2**20:.0f} MiB unpacked ({time.monotonic() - started:.0f}s)")  # fmt: skip
    return {"image": f"{name}:{tag}", "layers": [layer.digest for layer in layers],
            "compressed_bytes": size, "unpacked_bytes": unpacked}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("services", nargs="*", help=f"default: all ({', '.join(SERVICES)})")
    parser.add_argument("--tag", default="dev")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "images")
    args = parser.parse_args()
    if unknown := set(args.services) - set(SERVICES):
        parser.error(f"no such service: {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        raise SystemExit("debootstrap and the build sandbox need root")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or run(
        ["git", "log", "-1", "--format=%ct"], capture_output=True, cwd=ROOT).stdout)  # fmt: skip
    out: Path = args.out.resolve()
    sizes_file = out / "sizes.json"
    sizes = json.loads(sizes_file.read_text()) if sizes_file.exists() else {}
    for name in args.services or list(SERVICES):
        sizes[name] = build(SERVICES[name], out, args.tag, epoch)
        sizes_file.write_text(json.dumps(sizes, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
