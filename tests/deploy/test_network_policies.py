"""The NetworkPolicies of both overlays, rendered by the real kustomize: default-deny for the namespace, and
every workload reachable from, and reaching, exactly what docs/operations.md ("Data protection") says.

The checks read the rendered objects the way the API server's NetworkPolicy semantics do: a pod is selected
by a policy when its labels match ``spec.podSelector``; what it may receive (send) is the union of the
ingress (egress) rules of every policy selecting it with that policy type; named ports resolve against the
pod's own container ports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from deploy_files import OVERLAYS, REPO
from go_tools import kustomize_build
from test_kustomize_overlays import KUBERNETES_VERSIONS, OVERLAY_NAMES, WORKLOAD_KINDS, of_kind, pod_spec, rendered

Resource = dict[str, Any]
WORKLOADS = ("paystream-ingest", "paystream-processor", "paystream-fetcher", "paystream-archiver")
PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}

# The sources the docs declare for each overlay (namespace labels, pod labels).
INGRESS_CONTROLLER = {
    "dev": ({"kubernetes.io/metadata.name": "ingress-nginx"}, {"app.kubernetes.io/name": "ingress-nginx"}),
    "prod": ({"kubernetes.io/metadata.name": "ingress-nginx"},
             {"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}),
}
PROMETHEUS = {
    "dev": ({"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"}),
    "prod": ({"kubernetes.io/metadata.name": "monitoring"},
             {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": "k8s"}),
}
KAFKA = "kafka"  # pods of the Strimzi cluster in the namespace
KAFKA_PODS = {"strimzi.io/cluster": "paystream-kafka", "strimzi.io/kind": "Kafka"}
DNS = "dns"
PUBLIC = "public"  # 0.0.0.0/0 without private ranges
MINIO = "minio"


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Label-selector semantics (matchLabels AND matchExpressions; an empty selector selects everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[operator]
        if not ok:
            return False
    return True


def policies(overlay: str) -> list[Resource]:
    return of_kind(overlay, "NetworkPolicy")


def workload(overlay: str, name: str) -> Resource:
    return next(w for w in of_kind(overlay, *WORKLOAD_KINDS) if w["metadata"]["name"] == name)


def pod_labels(overlay: str, name: str) -> dict[str, str]:
    labels: dict[str, str] = workload(overlay, name)["spec"]["template"]["metadata"]["labels"]
    return labels


def container_ports(overlay: str, name: str) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in pod_spec(workload(overlay, name))["containers"] for p in c["ports"]}


def selecting(overlay: str, labels: dict[str, str], direction: str) -> list[Resource]:
    return [p for p in policies(overlay)
            if direction in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], labels)]


def peer_name(peer: dict[str, Any], overlay: str) -> str:
    """A peer as one of the sources/destinations the docs name; anything else fails the test."""
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        assert block["cidr"] == "0.0.0.0/0" and set(block.get("except", [])) >= PRIVATE, block
        return PUBLIC
    namespace = (peer.get("namespaceSelector") or {}).get("matchLabels")
    pods = (peer.get("podSelector") or {}).get("matchLabels")
    if "namespaceSelector" not in peer and pods == KAFKA_PODS:
        return KAFKA
    if "namespaceSelector" not in peer and pods == {"app.kubernetes.io/name": "minio"}:
        return MINIO
    if (namespace, pods) == ({"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}):
        return DNS
    if (namespace, pods) == INGRESS_CONTROLLER[overlay]:
        return "ingress-controller"
    if (namespace, pods) == PROMETHEUS[overlay]:
        return "prometheus"
    raise AssertionError(f"undeclared peer {peer}")


def allowed(overlay: str, name: str, direction: str) -> dict[str, set[str]]:
    """Peer → the "port/protocol"s the workload's pods may exchange with it in ``direction``."""
    ports = container_ports(overlay, name)
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    found: dict[str, set[str]] = {}
    for policy in selecting(overlay, pod_labels(overlay, name), direction):
        for rule in policy["spec"].get(rules_key, []):
            assert rule.get(peers_key), f"{policy['metadata']['name']}: a rule open to every peer"
            assert rule.get("ports"), f"{policy['metadata']['name']}: a rule open on every port"
            resolved = set()
            for port in rule["ports"]:
                number = port["port"]
                if isinstance(number, str):  # a named port: only if this pod declares it (ingress side)
                    if number not in ports:
                        continue
                    number = ports[number]
                resolved.add(f"{number}/{port.get('protocol', 'TCP')}")
            for peer in rule[peers_key]:
                if resolved:
                    found.setdefault(peer_name(peer, overlay), set()).update(resolved)
    return found


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_namespace_denies_everything_by_default(overlay: str) -> None:
    deny = [p for p in policies(overlay) if p["spec"]["podSelector"] == {}]
    assert [p["metadata"]["name"] for p in deny] == ["paystream-default-deny"]
    assert deny[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_workload_has_its_own_policy_in_both_directions(overlay: str) -> None:
    workloads = {w["metadata"]["name"] for w in of_kind(overlay, *WORKLOAD_KINDS)}
    assert workloads == set(WORKLOADS)
    for name in workloads:
        labels = pod_labels(overlay, name)
        for direction in ("Ingress", "Egress"):
            specific = [p["metadata"]["name"] for p in selecting(overlay, labels, direction)
                        if p["spec"]["podSelector"] != {}]
            assert specific, f"{name}: only default-deny selects it for {direction}"
        assert name in {p["metadata"]["name"] for p in selecting(overlay, labels, "Egress")}


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_ingest_accepts_only_the_ingress_controller_and_prometheus_on_its_http_port(overlay: str) -> None:
    http = f"{container_ports(overlay, 'paystream-ingest')['http']}/TCP"
    assert allowed(overlay, "paystream-ingest", "Ingress") == {"ingress-controller": {http}, "prometheus": {http}}


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
@pytest.mark.parametrize("name", ["paystream-processor", "paystream-fetcher", "paystream-archiver"])
def test_other_workloads_accept_only_the_metrics_scrape(overlay: str, name: str) -> None:
    metrics = f"{container_ports(overlay, name)['metrics']}/TCP"
    assert allowed(overlay, name, "Ingress") == {"prometheus": {metrics}}


EXPECTED_EGRESS: dict[str, dict[str, set[str]]] = {
    "paystream-processor": {KAFKA: {"9093/TCP"}, DNS: {"53/UDP", "53/TCP"}},
    "paystream-ingest": {KAFKA: {"9093/TCP"}, DNS: {"53/UDP", "53/TCP"}, PUBLIC: {"443/TCP"}},
    "paystream-fetcher": {KAFKA: {"9093/TCP"}, DNS: {"53/UDP", "53/TCP"}, PUBLIC: {"443/TCP"}},
    "paystream-archiver": {KAFKA: {"9093/TCP"}, DNS: {"53/UDP", "53/TCP"}, PUBLIC: {"443/TCP"}},
}


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
@pytest.mark.parametrize("name", WORKLOADS)
def test_workloads_reach_only_kafka_dns_and_their_https_hosts(overlay: str, name: str) -> None:
    expected = {peer: set(ports) for peer, ports in EXPECTED_EGRESS[name].items()}
    if overlay == "dev" and name == "paystream-archiver":
        expected[MINIO] = {"9000/TCP"}  # the in-cluster S3 of the dev overlay
    assert allowed(overlay, name, "Egress") == expected


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_kafka_port_is_the_bootstrap_listener(overlay: str) -> None:
    env = next(c for c in of_kind(overlay, "ConfigMap") if c["metadata"]["name"] == "paystream-env")["data"]
    assert env["PAYSTREAM_KAFKA__BOOTSTRAP"].rsplit(":", 1)[1] == "9093"


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_the_strimzi_exception_selects_kafka_pods_only(overlay: str) -> None:
    open_egress = [p for p in policies(overlay) if {} in p["spec"].get("egress", [])]
    assert [p["metadata"]["name"] for p in open_egress] == ["paystream-kafka-cluster-egress"]
    selector = open_egress[0]["spec"]["podSelector"]
    assert selector == {"matchLabels": {"strimzi.io/cluster": "paystream-kafka"}}
    assert not any(selects(selector, pod_labels(overlay, name)) for name in WORKLOADS)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_recovery_pods_reach_kafka_and_s3_and_nothing_reaches_them(overlay: str) -> None:
    labels = {"app.kubernetes.io/component": "recovery", "app.kubernetes.io/part-of": "paystream"}
    ingress = [rule for p in selecting(overlay, labels, "Ingress") for rule in p["spec"].get("ingress", [])]
    egress = {peer_name(peer, overlay) for p in selecting(overlay, labels, "Egress")
              for rule in p["spec"].get("egress", []) for peer in rule["to"]}
    assert ingress == []
    assert egress == {KAFKA, DNS, PUBLIC} | ({MINIO} if overlay == "dev" else set())


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_policies_validate_against_the_kubernetes_schemas(overlay: str, version: str) -> None:
    found = policies(overlay)
    assert len(found) >= 9
    for policy in found:
        kubernetes_validate.validate(policy, version, strict=True)
    broken = {**found[0], "spec": {**found[0]["spec"], "podSelectors": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def _names(resources: Iterable[Resource]) -> list[str]:
    return sorted(r["metadata"]["name"] for r in resources)


def documented_traefik_patch() -> str:
    """The patch docs/operations.md ("Data protection") gives for a cluster whose ingress controller is Traefik."""
    text = (REPO / "docs" / "operations.md").read_text()
    after = text[text.index("## Data protection"):]
    after = after[after.index("For Traefik"):]
    return after[after.index("```yaml") + len("```yaml"):after.index("```", after.index("```yaml") + 7)]


def test_an_overlay_swaps_the_ingress_controller_with_the_documented_patch(tmp_path: Path) -> None:
    # kustomize takes only relative paths to other kustomizations.
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(OVERLAYS / 'dev', tmp_path)}]\npatches:\n  - path: traefik.yaml\n")
    (tmp_path / "traefik.yaml").write_text(documented_traefik_patch())
    patched = kustomize_build(tmp_path)
    ingest = next(r for r in patched if r["kind"] == "NetworkPolicy" and r["metadata"]["name"] == "paystream-ingest")
    base = next(p for p in policies("dev") if p["metadata"]["name"] == "paystream-ingest")

    assert [peer["namespaceSelector"]["matchLabels"] for peer in ingest["spec"]["ingress"][0]["from"]] == [
        {"kubernetes.io/metadata.name": "traefik"}]
    assert len(ingest["spec"]["ingress"]) == 1
    assert ingest["spec"]["egress"] == base["spec"]["egress"]
    assert _names(r for r in patched if r["kind"] == "NetworkPolicy") == _names(policies("dev"))
    assert rendered("dev")  # the overlay itself is unchanged by the patch
