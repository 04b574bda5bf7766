"""Every overlay renders, schema-valid for a pinned Kubernetes version, and the renderer agrees
with kustomize itself where one is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_manifests import K8S, OVERLAYS, rendered
from k8s_render import RenderError, render

# The oldest Kubernetes the manifests promise to work on (mixed-protocol LoadBalancers: 1.26+).
KUBERNETES_VERSION = "1.30.0"


def test_the_overlays_are_dev_production_and_production_with_router_groups() -> None:
    assert OVERLAYS == ["dev", "production", "production-groups"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_resource_is_valid_for_the_pinned_kubernetes(overlay: str) -> None:
    errors = []
    for resource in rendered(overlay):
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{name}: {'.'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)


def test_a_misspelt_field_is_caught() -> None:
    deployment = next(r for r in rendered("dev") if r["kind"] == "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_file_in_the_tree_is_rendered_by_some_overlay() -> None:
    used = set()
    for overlay in OVERLAYS:
        for directory in [K8S / "overlays" / overlay, *_included(K8S / "overlays" / overlay)]:
            used.add(directory / "kustomization.yaml")
            spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
            used |= {(directory / r).resolve() for r in spec.get("resources", [])}
    assert {p.resolve() for p in K8S.rglob("*.yaml")} - {p.resolve() for p in used} == set()


def _included(directory: Path) -> list[Path]:
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    found = []
    for entry in spec.get("resources", []) + spec.get("components", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            found += [target, *_included(target)]
    return found


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_the_renderer_applies_components_patches_replicas_and_images(tmp_path: Path) -> None:
    """Each feature the renderer has, once; what is expected is what kustomize 5.5 prints."""
    _write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [app.yaml]\n",
            "base/app.yaml": (
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
                "spec:\n  replicas: 2\n  template:\n    spec:\n"
                "      affinity: {x: 1}\n      containers:\n"
                "        - {name: a, image: 'reg:5000/team/app:1.0', args: [one]}\n"
                "        - {name: b, image: team/side}\n"
            ),
            "extra/kustomization.yaml": "kind: Component\nresources: [cm.yaml]\n"
            "patches:\n  - target: {kind: Deployment}\n    patch: |-\n"
            "      - {op: add, path: /metadata/labels, value: {c: 'yes'}}\n",
            "extra/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v}\n",
            "top/kustomization.yaml": (
                "resources: [../base]\ncomponents: [../extra]\n"
                "replicas: [{name: app, count: 1}]\n"
                "images:\n  - {name: 'reg:5000/team/app', newTag: '2.0'}\n"
                "  - {name: team/side, newName: other/side, newTag: '3'}\n"
                "patches:\n  - target: {kind: Deployment, name: app}\n    patch: |-\n"
                "      - {op: remove, path: /spec/template/spec/affinity}\n"
                "      - {op: add, path: /spec/template/spec/containers/0/args/-, value: two}\n"
                "      - {op: replace, path: /spec/template/spec/containers/1/name, value: c}\n"
                "  - target: {kind: ConfigMap, name: cm}\n    patch: |-\n"
                "      - {op: replace, path: /data/k, value: w}\n"
            ),
        },
    )
    deployment, config = render(tmp_path / "top")
    assert config["data"] == {"k": "w"}
    assert deployment["metadata"]["labels"] == {"c": "yes"}
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and "affinity" not in spec["template"]["spec"]
    a, c = spec["template"]["spec"]["containers"]
    assert a == {"name": "a", "image": "reg:5000/team/app:2.0", "args": ["one", "two"]}
    assert c == {"name": "c", "image": "other/side:3"}


def test_the_renderer_deletes_a_resource_and_tests_before_it_patches(tmp_path: Path) -> None:
    """A component replacing a resource: `$patch: delete` removes it (by apiVersion, kind and
    name), and a JSON 6902 `test` guards a patch by list index; what kustomize 5.5 prints."""
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: %s}\nspec: {}\n"
    _write(
        tmp_path,
        {
            "base/kustomization.yaml": "resources: [app.yaml]\n",
            "base/app.yaml": (
                deployment % "old"
                + "---\napiVersion: v1\nkind: Service\nmetadata: {name: old}\nspec: {}\n"
                + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n"
                + "data: {a: '1', b: '2'}\n"
            ),
            "swap/kustomization.yaml": (
                "kind: Component\nresources: [new.yaml]\npatches:\n  - patch: |-\n"
                "      $patch: delete\n      apiVersion: apps/v1\n      kind: Deployment\n"
                "      metadata:\n        name: old\n"
                "  - target: {kind: ConfigMap, name: cm}\n    patch: |-\n"
                "      - {op: test, path: /data/a, value: '1'}\n"
                "      - {op: replace, path: /data/a, value: '3'}\n"
            ),
            "swap/new.yaml": deployment % "new",
            "top/kustomization.yaml": "resources: [../base]\ncomponents: [../swap]\n",
        },
    )
    names = [(r["kind"], r["metadata"]["name"]) for r in render(tmp_path / "top")]
    assert names == [("Service", "old"), ("ConfigMap", "cm"), ("Deployment", "new")]
    assert render(tmp_path / "top")[1]["data"] == {"a": "3", "b": "2"}
    swap = tmp_path / "swap" / "kustomization.yaml"
    swap.write_text(swap.read_text().replace("value: '1'}", "value: '2'}"))
    with pytest.raises(RenderError, match="test /data/a: '1', not '2'"):
        render(tmp_path / "top")
    swap.write_text(swap.read_text().replace("name: old", "name: gone"))
    with pytest.raises(RenderError, match="Deployment gone, which is not there"):
        render(tmp_path / "top")


def test_the_renderer_refuses_what_it_does_not_do(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(RenderError, match="commonLabels"):
        render(tmp_path)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_renderer_agrees_with_kubectl_kustomize(overlay: str) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0 and "unknown" in out.stderr and "components" in out.stderr:
        pytest.skip(f"this kubectl's kustomize is too old: {out.stderr.strip()}")
    assert out.returncode == 0, out.stderr
    theirs = {(r["kind"], r["metadata"]["name"]): r for r in yaml.safe_load_all(out.stdout) if r}
    ours = {(r["kind"], r["metadata"]["name"]): r for r in rendered(overlay)}
    assert ours == theirs
