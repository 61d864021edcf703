"""Renders the GitOps manifests from the Helm chart: the kustomize base, and for each overlay the
objects its values add, change or remove against the base (`make manifests`; a test fails on drift).

The base is `helm template --include-crds` of charts/hetplace with its default values. An overlay
is the chart with `overlays/NAME/values.yaml`, written as kustomize input over the base:
`added.yaml` (resources the base lacks), `changed.yaml` (strategic-merge patches: the fields that
differ, a list whole, a field the overlay drops as null) and `removed.yaml` (`$patch: delete` stubs). A test builds each overlay
with `kubectl kustomize` and checks it equals the chart's own render with those values.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

MANIFESTS = Path(__file__).resolve().parent
REPO = MANIFESTS.parent
CHART = REPO / "charts" / "hetplace"
HELM = Path(os.environ.get("HETPLACE_HELM", REPO / ".tools" / "bin" / "helm"))
RELEASE, NAMESPACE = "hetplace", "hetplace-system"
OVERLAYS = ("namespaced", "edge")
HEADER = "# Rendered by manifests/render.py from charts/hetplace ({what}); edit the chart or values.yaml, then `make manifests`.\n"


def helm_template(*args: str) -> str:
    """`helm template` of the chart as the manifests release it; ValueError with helm's message on failure."""
    done = subprocess.run([str(HELM), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip() or f"helm template exited {done.returncode}")
    return done.stdout


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


# Lists Kubernetes' strategic merge merges item by item on `name`; any other list is replaced whole.
MERGED_BY_NAME = {"containers", "initContainers", "env", "volumes"}


def difference(base: dict, wanted: dict) -> dict:
    """The strategic-merge patch that turns `base` into `wanted`: changed fields only, removed ones
    as null; in a list merged by name, only the items that changed (a removed one as `$patch: delete`)."""
    patch = {}
    for field in base.keys() | wanted.keys():
        old, new = base.get(field), wanted.get(field)
        if field not in wanted:
            patch[field] = None
        elif old == new:
            continue
        elif isinstance(old, dict) and isinstance(new, dict):
            patch[field] = difference(old, new)
        elif field in MERGED_BY_NAME and isinstance(old, list) and isinstance(new, list):
            before = {item["name"]: item for item in old}
            after = {item["name"]: item for item in new}
            patch[field] = [{"name": name, **difference(before.get(name, {}), item)}
                            for name, item in after.items() if before.get(name) != item]
            patch[field] += [{"name": name, "$patch": "delete"} for name in before if name not in after]
        else:
            patch[field] = new
    return dict(sorted(patch.items()))


def patch_for(base: dict, wanted: dict) -> dict:
    meta = {k: v for k, v in wanted["metadata"].items() if k in ("name", "namespace")}
    return {"apiVersion": wanted["apiVersion"], "kind": wanted["kind"], "metadata": meta,
            **{k: v for k, v in difference(base, wanted).items() if k not in ("apiVersion", "kind", "metadata")}}


def dump(objects: list[dict], what: str) -> str:
    body = "---\n".join(yaml.safe_dump(obj, sort_keys=False) for obj in objects)
    return HEADER.format(what=what) + (body if objects else "[]\n")


def render_base() -> dict[str, str]:
    return {"base/hetplace.yaml": helm_template("--include-crds")}


def render_overlay(name: str) -> dict[str, str]:
    base = {key(obj): obj for obj in documents(helm_template("--include-crds"))}
    values = MANIFESTS / "overlays" / name / "values.yaml"
    wanted = {key(obj): obj for obj in documents(helm_template("--include-crds", "--values", str(values)))}
    added = [obj for k, obj in wanted.items() if k not in base]
    changed = [patch_for(base[k], obj) for k, obj in wanted.items() if k in base and base[k] != obj]
    removed = [{"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                "metadata": {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace")},
                "$patch": "delete"} for k, obj in base.items() if k not in wanted]
    what = f"values of overlays/{name}/values.yaml"
    return {f"overlays/{name}/added.yaml": dump(added, what),
            f"overlays/{name}/changed.yaml": dump(changed, what),
            f"overlays/{name}/removed.yaml": dump(removed, what)}


def render_all() -> dict[str, str]:
    """Every generated file, by path under manifests/."""
    files = render_base()
    for name in OVERLAYS:
        files.update(render_overlay(name))
    return files


if __name__ == "__main__":
    for path, text in render_all().items():
        (MANIFESTS / path).write_text(text)
        print(f"wrote manifests/{path}", file=sys.stderr)
