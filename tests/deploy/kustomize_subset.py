"""A small Kustomize renderer for exactly the subset deploy/ uses, so the overlays can be built in tests.

``kustomize`` is a Go binary and no well-kept Python package ships it, so this renders what our
kustomization files use and refuses everything else (an unsupported field raises instead of being
silently ignored, so the subset cannot drift from what real ``kustomize build`` / ``kubectl -k`` does):

- ``resources``: files (multi-document YAML) and directories holding a ``kustomization.yaml``;
  files must lie inside the kustomization's root, as kustomize's default load restrictor demands.
- ``patches``: strategic-merge patches (a resource-shaped document; targets the resource of the same
  kind and name, or ``target``) and JSON 6902 patches (a YAML list of operations, needs ``target``),
  from ``path`` or inline ``patch``.
- ``namespace``, ``images`` (``name`` → ``newName``/``newTag``) and ``replicas``.

Transformers run in kustomize's order: patches, namespace, replicas, images.
Strategic merge knows the merge keys of the built-in list fields we patch (containers, env, volumes,
volume mounts, ports); other lists, and every list of a custom resource, are replaced whole, as kustomize
does for lists without a merge key and for kinds without an OpenAPI schema (JSON merge patch).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# API groups of built-in kinds, whose strategic-merge keys kustomize knows from the Kubernetes schema.
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io"}
CLUSTER_SCOPED_KINDS = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
}
# patchMergeKey of the built-in list fields (from the Kubernetes OpenAPI `x-kubernetes-patch-merge-key`).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
SCALABLE_KINDS = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


class KustomizeError(Exception):
    """The kustomization is invalid, or uses something outside the supported subset."""


def build(directory: Path) -> list[Resource]:
    """Render the kustomization in ``directory`` like ``kustomize build directory``."""
    root = directory.resolve()
    kustomization = _load_kustomization(root)
    unknown = set(kustomization) - SUPPORTED_FIELDS
    if unknown:
        raise KustomizeError(f"{root}: unsupported kustomization fields {sorted(unknown)}")

    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        resources.extend(_load_resource_entry(root, entry))
    _check_unique(resources, root)

    for patch in kustomization.get("patches", []):
        _apply_patch_entry(root, patch, resources)
    if "namespace" in kustomization:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED_KINDS:
                resource.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for replica in kustomization.get("replicas", []):
        _set_replicas(replica, resources)
    for image in kustomization.get("images", []):
        _set_image(image, resources)
    return resources


def resource_id(resource: Resource) -> tuple[str, str, str, str]:
    group = _group(resource.get("apiVersion", ""))
    metadata = resource.get("metadata", {})
    return (group, resource.get("kind", ""), metadata.get("namespace", ""), metadata.get("name", ""))


def _load_kustomization(root: Path) -> dict[str, Any]:
    for name in KUSTOMIZATION_FILES:
        path = root / name
        if path.is_file():
            data = yaml.safe_load(path.read_text())
            if not isinstance(data, dict):
                raise KustomizeError(f"{path}: not a mapping")
            return data
    raise KustomizeError(f"{root}: no kustomization.yaml")


def _load_resource_entry(root: Path, entry: str) -> list[Resource]:
    path = (root / entry).resolve()
    if path.is_dir():
        return build(path)
    _check_inside(root, path)
    if not path.is_file():
        raise KustomizeError(f"{root}: resource {entry} does not exist")
    return _load_documents(path)


def _load_documents(path: Path) -> list[Resource]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind"} <= set(doc):
            raise KustomizeError(f"{path}: a document without apiVersion/kind")
        if not doc.get("metadata", {}).get("name"):
            raise KustomizeError(f"{path}: a {doc['kind']} without metadata.name")
    return documents


def _check_inside(root: Path, path: Path) -> None:
    if root != path and root not in path.parents:
        raise KustomizeError(f"{path} is outside the kustomization root {root} (load restrictor)")


def _check_unique(resources: list[Resource], root: Path) -> None:
    seen: set[tuple[str, str, str, str]] = set()
    for resource in resources:
        rid = resource_id(resource)
        if rid in seen:
            raise KustomizeError(f"{root}: resource {rid} is defined twice")
        seen.add(rid)


# --- patches ----------------------------------------------------------------------------------


def _apply_patch_entry(root: Path, entry: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(entry) - {"path", "patch", "target"}
    if unknown or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{root}: a patch needs exactly one of path/patch (and optional target): {entry}")
    if "path" in entry:
        path = (root / entry["path"]).resolve()
        _check_inside(root, path)
        text = path.read_text()
    else:
        text = entry["patch"]
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    if len(documents) != 1:
        raise KustomizeError(f"{root}: a patch must hold exactly one document: {entry}")
    patch = documents[0]
    target = entry.get("target")

    if isinstance(patch, list):
        if target is None:
            raise KustomizeError(f"{root}: a JSON 6902 patch needs a target: {entry}")
        matches = _select(target, resources)
        for resource in matches:
            for operation in patch:
                _json6902(resource, operation)
        return

    if not isinstance(patch, dict):
        raise KustomizeError(f"{root}: a patch is a mapping or a list of operations: {entry}")
    if target is not None:
        matches = _select(target, resources)
    else:
        matches = [
            r for r in resources
            if r["kind"] == patch.get("kind")
            and _group(r["apiVersion"]) == _group(patch.get("apiVersion", ""))
            and r["metadata"]["name"] == patch.get("metadata", {}).get("name")
        ]
        if not matches:
            raise KustomizeError(f"{root}: no resource matches patch {patch.get('kind')}/{_name(patch)}")
    for resource in matches:
        strategic = _group(resource["apiVersion"]) in BUILTIN_GROUPS
        body = {k: v for k, v in patch.items() if k not in {"apiVersion", "kind"}}
        if target is not None:
            # A targeted patch must not rename what it patches.
            body.get("metadata", {}).pop("name", None)
        merged = _merge(resource, body, strategic=strategic)
        resource.clear()
        resource.update(merged)


def _select(target: dict[str, Any], resources: list[Resource]) -> list[Resource]:
    unknown = set(target) - {"group", "version", "kind", "name", "namespace", "labelSelector"}
    if unknown:
        raise KustomizeError(f"unsupported target fields {sorted(unknown)}")
    selected = []
    for resource in resources:
        api_version = resource["apiVersion"]
        metadata = resource.get("metadata", {})
        if "kind" in target and resource["kind"] != target["kind"]:
            continue
        if "group" in target and _group(api_version) != target["group"]:
            continue
        if "version" in target and api_version.rsplit("/", 1)[-1] != target["version"]:
            continue
        if "name" in target and not re.fullmatch(target["name"], metadata.get("name", "")):
            continue
        if "namespace" in target and metadata.get("namespace", "") != target["namespace"]:
            continue
        if "labelSelector" in target and not _labels_match(target["labelSelector"], metadata.get("labels", {})):
            continue
        selected.append(resource)
    if not selected:
        raise KustomizeError(f"patch target {target} matches no resource")
    return selected


def _labels_match(selector: str, labels: dict[str, str]) -> bool:
    for requirement in selector.split(","):
        key, sep, value = requirement.partition("=")
        if not sep or "!" in key:
            raise KustomizeError(f"only equality label selectors are supported: {selector!r}")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _merge(base: Any, patch: Any, *, strategic: bool, field: str = "") -> Any:
    if isinstance(patch, dict):
        if any(key.startswith("$") for key in patch):
            raise KustomizeError(f"strategic-merge directives are not supported: {sorted(patch)}")
        if not isinstance(base, dict):
            return copy.deepcopy(patch)
        merged = dict(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, strategic=strategic, field=key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and strategic and isinstance(base, list):
        key = _merge_key(field, base + patch)
        if key is not None:
            return _merge_list(base, patch, key)
    return copy.deepcopy(patch)


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        return "containerPort" if all("containerPort" in item for item in items) else "port"
    return MERGE_KEYS.get(field)


def _merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    merged = [copy.deepcopy(item) for item in base]
    for item in patch:
        position = next((i for i, existing in enumerate(merged) if existing.get(key) == item.get(key)), None)
        if position is None:
            merged.append(copy.deepcopy(item))
        else:
            merged[position] = _merge(merged[position], item, strategic=True)
    return merged


def _json6902(resource: Resource, operation: dict[str, Any]) -> None:
    op = operation.get("op")
    if op not in {"add", "replace", "remove"}:
        raise KustomizeError(f"unsupported JSON 6902 operation {op!r}")
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in operation["path"].split("/")[1:]]
    if not tokens:
        raise KustomizeError("a JSON 6902 patch cannot replace the whole resource")
    parent: Any = resource
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent[token]
    last = tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        else:
            del parent[index]
        return
    if op in {"replace", "remove"} and last not in parent:
        raise KustomizeError(f"JSON 6902 {op}: {operation['path']} does not exist in {_name(resource)}")
    if op == "remove":
        del parent[last]
    else:
        parent[last] = copy.deepcopy(operation["value"])


# --- builtin transformers ---------------------------------------------------------------------


def _set_replicas(entry: dict[str, Any], resources: list[Resource]) -> None:
    matches = [r for r in resources if r["kind"] in SCALABLE_KINDS and _name(r) == entry["name"]]
    if not matches:
        raise KustomizeError(f"replicas: no workload named {entry['name']}")
    for resource in matches:
        resource["spec"]["replicas"] = int(entry["count"])


def _set_image(entry: dict[str, Any], resources: list[Resource]) -> None:
    unknown = set(entry) - {"name", "newName", "newTag"}
    if unknown:
        raise KustomizeError(f"images: unsupported fields {sorted(unknown)}")
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, tag = _split_image(container["image"])
            if name != entry["name"]:
                continue
            new_tag = entry.get("newTag", tag)
            container["image"] = entry.get("newName", name) + (f":{new_tag}" if new_tag else "")


def _split_image(image: str) -> tuple[str, str | None]:
    if "@" in image:
        raise KustomizeError(f"images pinned by digest are not supported: {image}")
    name, sep, tag = image.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return image, None


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def _name(resource: Resource) -> str:
    return str(resource.get("metadata", {}).get("name", ""))
