#!/usr/bin/env python3
"""Render a kustomization offline: the subset of kustomize that k8s/ uses.

No kustomize binary is installable from the package registries this project
can reach, so this renders `kustomization.yaml` files itself. It supports:

- `resources`: YAML files (multi-document) and directories holding a
  kustomization, recursively;
- `components`: directories holding a `kind: Component`, whose resources are
  added and whose transformers then apply to everything accumulated so far;
- `patches` with `path` or inline `patch`, optional `target` (kind, name,
  namespace): strategic-merge patches (maps merged, lists of maps merged by
  `name`, other lists replaced, `$patch: delete` removes the object);
- `namespace`, and `images` (`name` -> `newName`, `newTag`, `digest`).

Anything else in a kustomization is an error, so a manifest change that needs
real kustomize features fails loudly here instead of rendering wrongly. Like
kustomize's default load restrictor, files must lie inside the
kustomization's directory (other kustomization directories may be anywhere).

Usage: kustomize_render.py DIR  (prints the rendered documents to stdout)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "namespace", "images"}

# Kinds that have no namespace (the ones this project could plausibly use).
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ClusterTriggerAuthentication",
}


class RenderError(Exception):
    """A kustomization this renderer cannot (or must not) render."""


def load_docs(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise RenderError(f"{directory}: no kustomization.yaml")


def inside(root: Path, path: Path) -> Path:
    resolved = path.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise RenderError(f"{path}: file outside the kustomization root {root} (kustomize refuses this)")
    return resolved


def build(directory: Path, expect_kind: str = "Kustomization") -> list[dict]:
    """Render the kustomization in `directory` to a list of objects."""
    return apply_kustomization(directory, [], expect_kind)


def apply_kustomization(directory: Path, accumulated: list[dict], expect_kind: str) -> list[dict]:
    spec_path = kustomization_file(directory)
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    kind = spec.get("kind", "Kustomization")
    if kind != expect_kind:
        raise RenderError(f"{spec_path}: expected kind {expect_kind}, found {kind}")
    unknown = set(spec) - SUPPORTED_FIELDS
    if unknown:
        raise RenderError(f"{spec_path}: unsupported fields {sorted(unknown)} (extend scripts/kustomize_render.py)")

    objects = list(accumulated)
    for entry in spec.get("resources", []) or []:
        target = directory / entry
        if target.is_dir():
            objects.extend(build(target))
        elif target.is_file():
            objects.extend(load_docs(inside(directory, target)))
        else:
            raise RenderError(f"{spec_path}: resource {entry!r} not found")

    for entry in spec.get("components", []) or []:
        target = directory / entry
        if not target.is_dir():
            raise RenderError(f"{spec_path}: component {entry!r} is not a directory")
        objects = apply_kustomization(target, objects, "Component")

    for patch in spec.get("patches", []) or []:
        objects = apply_patch(directory, spec_path, patch, objects)

    if "namespace" in spec:
        for obj in objects:
            if obj.get("kind") not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = spec["namespace"]

    for image in spec.get("images", []) or []:
        set_image(objects, image)

    check_unique(objects, spec_path)
    return objects


def object_id(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return (obj.get("kind", ""), meta.get("name", ""), meta.get("namespace", ""))


def check_unique(objects: list[dict], where: Path) -> None:
    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion", "").split("/")[0] if "/" in obj.get("apiVersion", "") else "",) + object_id(obj)
        if key in seen:
            raise RenderError(f"{where}: duplicate object {key}")
        seen.add(key)


def matches(obj: dict, kind: str | None, name: str | None, namespace: str | None) -> bool:
    o_kind, o_name, o_namespace = object_id(obj)
    return (
        (kind is None or kind == o_kind)
        and (name is None or name == o_name)
        and (namespace is None or namespace == o_namespace)
    )


def apply_patch(directory: Path, spec_path: Path, patch: dict, objects: list[dict]) -> list[dict]:
    if "path" in patch:
        docs = load_docs(inside(directory, directory / patch["path"]))
    elif "patch" in patch:
        docs = [doc for doc in yaml.safe_load_all(patch["patch"]) if doc is not None]
    else:
        raise RenderError(f"{spec_path}: a patch needs `path` or `patch`")
    target = patch.get("target") or {}
    unknown = set(target) - {"kind", "name", "namespace"}
    if unknown:
        raise RenderError(f"{spec_path}: unsupported patch target fields {sorted(unknown)}")
    for doc in docs:
        if isinstance(doc, list):
            raise RenderError(f"{spec_path}: JSON 6902 patches are not supported")
        meta = doc.get("metadata", {})
        kind = target.get("kind", doc.get("kind"))
        name = target.get("name", meta.get("name"))
        namespace = target.get("namespace", meta.get("namespace"))
        hits = [obj for obj in objects if matches(obj, kind, name, namespace)]
        if not hits:
            raise RenderError(f"{spec_path}: patch matches no object (kind={kind}, name={name})")
        if doc.get("$patch") == "delete":
            objects = [obj for obj in objects if not any(obj is hit for hit in hits)]
            continue
        for hit in hits:
            body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
            merged = strategic_merge(hit, body)
            hit.clear()
            hit.update(merged)
    return objects


def strategic_merge(base, patch):
    """Merge `patch` into a copy of `base` (strategic-merge rules for the common cases)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list):
        if all(isinstance(item, dict) and "name" in item for item in base + patch):
            out = copy.deepcopy(base)
            for item in patch:
                index = next((i for i, old in enumerate(out) if old["name"] == item["name"]), None)
                if item.get("$patch") == "delete":
                    if index is not None:
                        out.pop(index)
                elif index is None:
                    out.append(copy.deepcopy(item))
                else:
                    out[index] = strategic_merge(out[index], item)
            return out
        return copy.deepcopy(patch)
    return copy.deepcopy(patch)


def pod_specs(obj: dict):
    """Yield the pod spec(s) of a workload object."""
    kind = obj.get("kind")
    spec = obj.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield spec.get("template", {}).get("spec", {})
    elif kind == "CronJob":
        yield spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    elif kind == "Pod":
        yield spec


def split_image(image: str) -> tuple[str, str | None, str | None]:
    name, digest = (image.split("@", 1) + [None])[:2] if "@" in image else (image, None)
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
    return name, tag, digest


def set_image(objects: list[dict], image: dict) -> None:
    for obj in objects:
        for pod in pod_specs(obj):
            for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
                name, tag, digest = split_image(container.get("image", ""))
                if name != image["name"]:
                    continue
                name = image.get("newName", name)
                if "newTag" in image:
                    tag = str(image["newTag"])
                if "digest" in image:
                    digest = image["digest"]
                text = name
                if tag:
                    text += f":{tag}"
                if digest:
                    text += f"@{digest}"
                container["image"] = text


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        objects = build(Path(argv[1]))
    except (RenderError, yaml.YAMLError, OSError) as error:
        print(f"kustomize_render: {error}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
