"""Render manifests/ overlays without a cluster (the subset of `kustomize build` they use) and validate them.

Supported: `resources` (files and directories with a kustomization.yaml), `namespace`, and `patches` with
JSON-6902 operations and a {group, version, kind, name} target — what manifests/ uses, nothing more.

    $ cmva manifests --overlay packed > cmva.yaml
"""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume"}
MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"


def _matches(doc: dict, target: dict) -> bool:
    group, _, version = doc.get("apiVersion", "").rpartition("/")
    return all(
        want is None or want == have
        for want, have in (
            (target.get("kind"), doc.get("kind")),
            (target.get("name"), doc.get("metadata", {}).get("name")),
            (target.get("group"), group),
            (target.get("version"), version),
        )
    )


def build(path: str | Path) -> list[dict]:
    """The objects of a kustomization directory, patched and namespaced."""
    import jsonpatch

    path = Path(path)
    k = yaml.safe_load((path / "kustomization.yaml").read_text()) or {}
    unsupported = set(k) - {"apiVersion", "kind", "namespace", "resources", "patches"}
    if unsupported:
        raise ValueError(f"{path}/kustomization.yaml uses {sorted(unsupported)}, which this renderer does not support")
    docs: list[dict] = []
    for res in k.get("resources", []):
        p = path / res
        docs += build(p) if p.is_dir() else [d for d in yaml.safe_load_all(p.read_text()) if d]
    for patch in k.get("patches", []):
        ops = jsonpatch.JsonPatch(yaml.safe_load(patch["patch"]))
        hits = [i for i, d in enumerate(docs) if _matches(d, patch.get("target", {}))]
        if not hits:
            raise ValueError(f"{path}: patch target {patch.get('target')} matches nothing")
        for i in hits:
            docs[i] = ops.apply(docs[i])
    if ns := k.get("namespace"):
        for d in docs:
            if d["kind"] not in CLUSTER_SCOPED:
                d.setdefault("metadata", {})["namespace"] = ns
    return docs


def render(overlay: str) -> str:
    return yaml.safe_dump_all(build(MANIFESTS / "overlays" / overlay), sort_keys=False)
