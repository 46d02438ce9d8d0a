"""The Kustomize overlays render, validate against the Kubernetes schemas, and mean what they say.

Rendering runs the real ``kustomize build`` (the version the Makefile pins, built by ``make tools``; see
go_tools.py). Built-in kinds are validated with the JSON Schemas of the `kubernetes-validate` package in
strict mode (unknown fields fail); the custom resources (Prometheus Operator, Strimzi) with the
hand-kept schemas of custom_resource_schemas.py, since no tool here ships their CRD schemas offline.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from custom_resource_schemas import SCHEMAS
from deploy_files import OVERLAYS
from go_tools import ToolFailed, kustomize_build

from paystream.config import Settings

OVERLAY_NAMES = ["dev", "prod"]
# The oldest Kubernetes minor we support, and the newest whose schemas the package ships.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
PROCESSES = {
    "paystream-ingest": "ingest",
    "paystream-processor": "process",
    "paystream-fetcher": "fetch",
    "paystream-archiver": "archive",
}
# Settings the manifests set that paystream/config.py does not have yet. When such a field lands, this
# test fails until the name is removed here.
PENDING_SETTINGS: set[str] = set()

Resource = dict[str, Any]
_rendered: dict[str, list[Resource]] = {}


def rendered(overlay: str) -> list[Resource]:
    if overlay not in _rendered:
        _rendered[overlay] = kustomize_build(OVERLAYS / overlay)
    return _rendered[overlay]


def of_kind(overlay: str, *kinds: str) -> list[Resource]:
    return [r for r in rendered(overlay) if r["kind"] in kinds]


def named(overlay: str, kind: str, name: str) -> Resource:
    return next(r for r in of_kind(overlay, kind) if r["metadata"]["name"] == name)


def pod_spec(workload: Resource) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(overlay: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (w["metadata"]["name"], c) for w in of_kind(overlay, *WORKLOAD_KINDS) for c in pod_spec(w)["containers"]
    ]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_overlay_renders_every_process(overlay: str) -> None:
    workloads = {w["metadata"]["name"]: w["kind"] for w in of_kind(overlay, *WORKLOAD_KINDS)}
    assert workloads == {
        "paystream-ingest": "Deployment",
        "paystream-processor": "StatefulSet",
        "paystream-fetcher": "Deployment",
        "paystream-archiver": "Deployment",
    }


def test_a_broken_kustomization_fails_the_build(tmp_path: Path) -> None:
    # A patch for a resource the kustomization does not have: kustomize's own error reaches the test.
    (tmp_path / "kustomization.yaml").write_text("resources: [config.yaml]\npatches:\n  - path: ingest.yaml\n")
    (tmp_path / "config.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: paystream-env}\n")
    (tmp_path / "ingest.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: paystream-ingest}\nspec: {replicas: 2}\n"
    )
    with pytest.raises(ToolFailed, match="no resource matches strategic merge patch"):
        kustomize_build(tmp_path)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_resource_gets_the_overlay_namespace(overlay: str) -> None:
    expected = {"dev": "paystream-dev", "prod": "paystream"}[overlay]
    assert {r["metadata"].get("namespace") for r in rendered(overlay)} == {expected}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_builtin_resources_validate_against_kubernetes_schemas(overlay: str, version: str) -> None:
    builtin = [r for r in rendered(overlay) if (r["apiVersion"], r["kind"]) not in SCHEMAS]
    assert len(builtin) > 10
    errors = []
    for resource in builtin:
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {exc.message}")
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_custom_resources_validate_against_their_schemas(overlay: str) -> None:
    custom = [r for r in rendered(overlay) if (r["apiVersion"], r["kind"]) in SCHEMAS]
    assert {r["kind"] for r in custom} == {"ServiceMonitor", "PrometheusRule", "KafkaTopic", "KafkaUser"}
    errors = []
    for resource in custom:
        schema = SCHEMAS[(resource["apiVersion"], resource["kind"])]
        for error in jsonschema.Draft202012Validator(schema).iter_errors(resource):
            errors.append(f"{resource['kind']}/{resource['metadata']['name']}: {error.message}")
    assert errors == []


def test_custom_resource_schema_rejects_an_unknown_acl_operation() -> None:
    user = named("prod", "KafkaUser", "paystream-ingest")
    broken = {**user, "spec": {**user["spec"], "authorization": {"type": "simple", "acls": [
        {"resource": {"type": "topic", "name": "payments.inbox.v1"}, "operations": ["Writ"]}]}}}
    validator = jsonschema.Draft202012Validator(SCHEMAS[("kafka.strimzi.io/v1beta2", "KafkaUser")])
    assert not validator.is_valid(broken)


def test_kubernetes_schema_rejects_a_misspelled_field() -> None:
    deployment = named("prod", "Deployment", "paystream-fetcher")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_each_workload_runs_its_own_subcommand(overlay: str) -> None:
    commands = {name: container["args"] for name, container in containers(overlay)}
    assert commands == {name: [subcommand] for name, subcommand in PROCESSES.items()}


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_liveness_never_depends_on_kafka_and_readiness_does(overlay: str) -> None:
    probes = {
        name: (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"])
        for name, c in containers(overlay)
    }
    assert set(probes.values()) == {("/healthz", "/readyz")}
    assert set(probes) == set(PROCESSES)


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_probes_use_ports_the_container_declares(overlay: str) -> None:
    env = named(overlay, "ConfigMap", "paystream-env")["data"]
    for name, container in containers(overlay):
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, name
        expected = env["PAYSTREAM_HTTP__PORT"] if name == "paystream-ingest" else env["PAYSTREAM_METRICS_PORT"]
        assert list(ports.values()) == [int(expected)], name


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for name, container in containers(overlay):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert {"cpu", "memory"} <= set(resources["limits"]), name


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_workload_has_a_disruption_budget(overlay: str) -> None:
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in of_kind(overlay, "PodDisruptionBudget")
    }
    for workload in of_kind(overlay, *WORKLOAD_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in budget) for budget in budgets), workload["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_ingest_autoscales_on_cpu_and_leaves_replicas_to_the_hpa(overlay: str) -> None:
    hpa = named(overlay, "HorizontalPodAutoscaler", "paystream-ingest")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "paystream-ingest"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in named(overlay, "Deployment", "paystream-ingest")["spec"]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_processor_state_volume_is_mounted_at_the_state_dir(overlay: str) -> None:
    processor = named(overlay, "StatefulSet", "paystream-processor")
    state_dir = named(overlay, "ConfigMap", "paystream-env")["data"]["PAYSTREAM_STATE_DIR"]
    claims = {t["metadata"]["name"] for t in processor["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(processor)["containers"][0]["volumeMounts"]}
    assert claims == {"state"}
    assert mounts["state"] == state_dir


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_workloads_run_as_non_root_with_a_read_only_root(overlay: str) -> None:
    for workload in of_kind(overlay, *WORKLOAD_KINDS):
        assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True
        for container in pod_spec(workload)["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_overlay_sets_a_tagged_image(overlay: str) -> None:
    images = {container["image"] for _, container in containers(overlay)}
    assert len(images) == 1
    (image,) = images
    assert image.rsplit("/", 1)[-1].startswith("paystream:")


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_each_process_authenticates_as_its_own_kafka_user(overlay: str) -> None:
    users = {u["metadata"]["name"] for u in of_kind(overlay, "KafkaUser")}
    for name, container in containers(overlay):
        env = {e["name"]: e for e in container["env"]}
        assert env["PAYSTREAM_KAFKA__SASL_USERNAME"]["value"] == name
        assert env["PAYSTREAM_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == name
        assert name in users


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_every_mounted_config_map_and_secret_is_rendered_or_external(overlay: str) -> None:
    # Secrets written by Strimzi (cluster CA) or kept out of git (prod provider secrets) are external.
    external = {"paystream-kafka-cluster-ca-cert"} | ({"paystream-provider-secrets"} if overlay == "prod" else set())
    present = {(r["kind"], r["metadata"]["name"]) for r in rendered(overlay)}
    for workload in of_kind(overlay, *WORKLOAD_KINDS):
        for volume in pod_spec(workload)["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in present
            if "secret" in volume and volume["secret"]["secretName"] not in external:
                assert ("Secret", volume["secret"]["secretName"]) in present


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_services_select_a_workload_and_the_service_monitor_finds_them(overlay: str) -> None:
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in of_kind(overlay, *WORKLOAD_KINDS)]
    monitor = named(overlay, "ServiceMonitor", "paystream")
    monitored_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for service in of_kind(overlay, "Service"):
        selector = service["spec"]["selector"]
        assert any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels)
        wanted = monitor["spec"]["selector"]["matchLabels"]
        assert all(service["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        assert {p["name"] for p in service["spec"]["ports"]} & monitored_ports


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_environment_names_are_settings_and_their_values_parse(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(named(overlay, "ConfigMap", "paystream-env")["data"])
    unknown = {name for name in env if not _is_setting(name)}
    assert unknown == PENDING_SETTINGS
    for name, value in env.items():
        # The TOML file is mounted from a ConfigMap in the cluster; it does not exist here.
        if name not in unknown and name != "PAYSTREAM_CONFIG_FILE":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("PAYSTREAM_CONFIG_FILE", raising=False)
    settings = Settings()
    # Pods must listen beyond loopback for probes and Services to reach them.
    assert settings.http.host == "0.0.0.0"  # noqa: S104
    assert settings.metrics_port == 9100


def _is_setting(env_name: str) -> bool:
    assert env_name.startswith("PAYSTREAM_")
    model: Any = Settings
    for part in env_name.removeprefix("PAYSTREAM_").lower().split("__"):
        fields = model.model_fields
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_fixed_size_workloads_declare_a_replica_count(overlay: str) -> None:
    counts = {w["metadata"]["name"]: w["spec"].get("replicas") for w in of_kind(overlay, *WORKLOAD_KINDS)}
    del counts["paystream-ingest"]  # sized by its HPA
    assert all(isinstance(count, int) and count >= 1 for count in counts.values()), counts
    # One replica per fetch-rate share: see deploy/k8s/base/fetcher.yaml.
    assert counts["paystream-fetcher"] == 1


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_processor_topic_settings_match_the_kafka_topics(overlay: str) -> None:
    """The processor creates its internal topics with these settings: co-partitioned with the inbox."""
    env = named(overlay, "ConfigMap", "paystream-env")["data"]
    topics = [t for t in of_kind(overlay, "KafkaTopic") if t["spec"]["topicName"] == "payments.inbox.v1"]
    (inbox,) = topics
    assert int(env["PAYSTREAM_TOPICS__PARTITIONS"]) == inbox["spec"]["partitions"]
    assert int(env["PAYSTREAM_TOPICS__REPLICATION_FACTOR"]) == inbox["spec"]["replicas"]


@pytest.mark.parametrize("overlay", OVERLAY_NAMES)
def test_accounts_file_is_valid_configuration(overlay: str) -> None:
    document = tomllib.loads(named(overlay, "ConfigMap", "paystream-accounts")["data"]["paystream.toml"])
    settings = Settings(**document)
    assert settings.accounts and settings.observation_tokens


def test_every_secret_reference_names_a_key_of_the_mounted_secret() -> None:
    document = tomllib.loads(named("dev", "ConfigMap", "paystream-accounts")["data"]["paystream.toml"])
    references = list(document["observation_tokens"])
    for accounts in document["accounts"].values():
        for account in accounts.values():
            references += account.get("secrets", [])
            references += [account[k] for k in ("api_key", "private_key") if k in account]
    mount = next(
        m["mountPath"]
        for m in pod_spec(named("dev", "Deployment", "paystream-ingest"))["containers"][0]["volumeMounts"]
        if m["name"] == "provider-secrets"
    )
    keys = set(named("dev", "Secret", "paystream-provider-secrets")["stringData"])
    assert references
    for reference in references:
        kind, _, path = reference.partition(":")
        assert kind == "file" and path.startswith(mount + "/"), reference
        assert path.removeprefix(mount + "/") in keys, reference
