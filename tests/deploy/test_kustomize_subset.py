"""The Kustomize subset renderer does what kustomize does for the features we use, and refuses the rest."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from kustomize_subset import KustomizeError, build

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
        - name: main
          image: paystream
          args: ["ingest"]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
        - name: sidecar
          image: other:1.0
"""


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return directory


def _base(tmp_path: Path) -> Path:
    return _write(tmp_path, {"base/kustomization.yaml": "resources: [app.yaml]\n", "base/app.yaml": DEPLOYMENT})


def test_strategic_merge_merges_containers_and_env_by_name_and_replaces_plain_lists(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {
        "kustomization.yaml": "resources: [../base]\npatches:\n  - path: patch.yaml\n",
        "patch.yaml": """\
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: app}
            spec:
              template:
                spec:
                  containers:
                    - name: main
                      args: ["process"]
                      env:
                        - {name: B, value: "20"}
                        - {name: C, value: "3"}
            """,
    })
    (app,) = build(overlay)
    main, sidecar = app["spec"]["template"]["spec"]["containers"]
    assert main["args"] == ["process"]
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}, {"name": "C", "value": "3"}]
    assert sidecar == {"name": "sidecar", "image": "other:1.0"}


def test_json6902_patch_applies_to_every_target(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": """\
        resources: [../base]
        patches:
          - target: {kind: Deployment}
            patch: |-
              - {op: replace, path: /spec/replicas, value: 5}
              - {op: add, path: /metadata/labels, value: {tier: web}}
        """})
    (app,) = build(overlay)
    assert app["spec"]["replicas"] == 5
    assert app["metadata"]["labels"] == {"tier": "web"}


def test_json6902_replace_of_a_missing_path_fails(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": """\
        resources: [../base]
        patches:
          - target: {kind: Deployment}
            patch: |-
              - {op: replace, path: /spec/paused, value: true}
        """})
    with pytest.raises(KustomizeError, match="does not exist"):
        build(overlay)


def test_patch_that_matches_nothing_fails(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {
        "kustomization.yaml": "resources: [../base]\npatches:\n  - path: patch.yaml\n",
        "patch.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: typo}\nspec: {replicas: 1}\n",
    })
    with pytest.raises(KustomizeError, match="no resource matches"):
        build(overlay)


def test_namespace_images_and_replicas_are_applied(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": """\
        namespace: team
        resources: [../base]
        images:
          - {name: paystream, newName: registry.test/paystream, newTag: "1.2.3"}
        replicas:
          - {name: app, count: 4}
        """})
    (app,) = build(overlay)
    assert app["metadata"]["namespace"] == "team"
    assert app["spec"]["replicas"] == 4
    images = [c["image"] for c in app["spec"]["template"]["spec"]["containers"]]
    assert images == ["registry.test/paystream:1.2.3", "other:1.0"]


def test_unsupported_kustomization_field_is_refused(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": "resources: [../base]\nnamePrefix: x-\n"})
    with pytest.raises(KustomizeError, match="namePrefix"):
        build(overlay)


def test_resource_file_outside_the_root_is_refused(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": "resources: [../base/app.yaml]\n"})
    with pytest.raises(KustomizeError, match="load restrictor"):
        build(overlay)


def test_the_same_resource_twice_is_refused(tmp_path: Path) -> None:
    _base(tmp_path)
    overlay = _write(tmp_path / "overlay", {"kustomization.yaml": "resources: [../base, app.yaml]\n",
                                            "app.yaml": DEPLOYMENT})
    with pytest.raises(KustomizeError, match="defined twice"):
        build(overlay)
