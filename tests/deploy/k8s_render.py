"""`kustomize build` for the part of kustomize that deploy/k8s uses, in Python.

No kustomize binary comes from PyPI or Debian that knows components (Debian's kubectl 1.20
embeds kustomize 2.0.3; components came in 3.7), so the tests render the overlays with this.
It does, in kustomize's order:

- `resources`: files (YAML streams) and directories holding a kustomization, recursively;
- `components`: a `kind: Component` kustomization applied to what was accumulated so far;
- `patches` with a `target` (kind, name) and an inline JSON 6902 patch (add, remove, replace,
  test), or an inline strategic merge patch that deletes one resource (`$patch: delete`, with
  its apiVersion, kind and metadata.name, as a component removes what it replaces);
- `replicas` (by Deployment or StatefulSet name) and `images` (newName, newTag, by image name).

Anything else in a kustomization is refused, not ignored, so the manifests cannot quietly grow
past what is rendered here. test_render.py compares the output with `kubectl kustomize` when a
kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
KNOWN_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "replicas", "images"}


class RenderError(ValueError):
    pass


def render(directory: Path) -> list[Resource]:
    """The resources `kustomize build directory` prints, in the order they were declared."""
    return _build(directory, kind="Kustomization", accumulated=[])


def _build(directory: Path, kind: str, accumulated: list[Resource]) -> list[Resource]:
    path = directory / "kustomization.yaml"
    spec = yaml.safe_load(path.read_text()) or {}
    if spec.get("kind", "Kustomization") != kind:
        raise RenderError(f"{path}: expected kind {kind}, found {spec.get('kind')}")
    unknown = set(spec) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{path}: this renderer does not do {sorted(unknown)}")
    resources = accumulated
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            resources = resources + _build(target, "Kustomization", [])
        else:
            resources = resources + [d for d in yaml.safe_load_all(target.read_text()) if d]
    _refuse_duplicates(resources, path)
    for entry in spec.get("components", []):
        resources = _build((directory / entry).resolve(), "Component", resources)
    resources = copy.deepcopy(resources)
    for patch in spec.get("patches", []):
        _patch(resources, patch, path)
    for replica in spec.get("replicas", []):
        _workload(resources, replica["name"], path)["spec"]["replicas"] = replica["count"]
    for image in spec.get("images", []):
        _set_image(resources, image)
    return resources


def _refuse_duplicates(resources: list[Resource], path: Path) -> None:
    seen: set[tuple[str, str]] = set()
    for r in resources:
        key = (r["kind"], r["metadata"]["name"])
        if key in seen:
            raise RenderError(f"{path}: {key[0]} {key[1]} is declared twice")
        seen.add(key)


def _workload(resources: list[Resource], name: str, path: Path) -> Resource:
    for r in resources:
        if r["kind"] in {"Deployment", "StatefulSet"} and r["metadata"]["name"] == name:
            return r
    raise RenderError(f"{path}: replicas for {name}, which is no Deployment or StatefulSet")


def _patch(resources: list[Resource], patch: dict[str, Any], path: Path) -> None:
    if "target" not in patch and isinstance(deletion := yaml.safe_load(patch["patch"]), dict):
        _delete(resources, deletion, path)
        return
    target = patch.get("target") or {}
    if set(target) - {"kind", "name"} or "patch" not in patch:
        raise RenderError(f"{path}: only inline JSON 6902 patches with a kind/name target")
    matched = [
        r
        for r in resources
        if r["kind"] == target.get("kind", r["kind"])
        and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])
    ]
    if not matched:
        raise RenderError(f"{path}: patch target {target} matches nothing")
    for r in matched:
        for op in yaml.safe_load(patch["patch"]):
            _apply(r, op, path)


def _delete(resources: list[Resource], patch: dict[str, Any], path: Path) -> None:
    """A strategic merge patch `$patch: delete`: the resource of its kind and name is removed."""
    if patch.get("$patch") != "delete" or set(patch) != {
        "$patch",
        "apiVersion",
        "kind",
        "metadata",
    }:
        raise RenderError(
            f"{path}: of strategic merge patches, only `$patch: delete` of a resource"
        )
    name = patch["metadata"]["name"]
    matched = [
        i
        for i, r in enumerate(resources)
        if (r["apiVersion"], r["kind"], r["metadata"]["name"])
        == (patch["apiVersion"], patch["kind"], name)
    ]
    if not matched:
        raise RenderError(f"{path}: $patch: delete of {patch['kind']} {name}, which is not there")
    del resources[matched[0]]


def _apply(doc: Resource, op: dict[str, Any], path: Path) -> None:
    """One JSON 6902 operation (RFC 6902): add, remove or replace at a JSON pointer."""
    keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
    parent: Any = doc
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    kind = op["op"]
    if kind == "test":
        found = parent[int(last)] if isinstance(parent, list) else parent.get(last)
        if found != op["value"]:
            raise RenderError(f"{path}: test {op['path']}: {found!r}, not {op['value']!r}")
        return
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "remove":
            del parent[index]
        elif kind == "replace":
            parent[index] = op["value"]
        else:
            raise RenderError(f"{path}: patch op {kind} is not supported")
        return
    if kind in {"remove", "replace"} and last not in parent:
        raise RenderError(f"{path}: {kind} {op['path']}: no such field")
    if kind == "remove":
        del parent[last]
    elif kind in {"add", "replace"}:
        parent[last] = op["value"]
    else:
        raise RenderError(f"{path}: patch op {kind} is not supported")


def containers(resource: Resource) -> list[dict[str, Any]]:
    """The containers and init containers of a workload's pod template (none for other kinds)."""
    pod = resource.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def image_name(image: str) -> str:
    """The image without its tag or digest: registry:5000/a/b:1.2 -> registry:5000/a/b."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def _set_image(resources: list[Resource], image: dict[str, Any]) -> None:
    for r in resources:
        for container in containers(r):
            if image_name(container["image"]) != image["name"]:
                continue
            name = image.get("newName", image["name"])
            old = container["image"]
            tag = old[len(image_name(old)) :] if old != image_name(old) else ""
            if "newTag" in image:
                tag = f":{image['newTag']}"
            container["image"] = name + tag
