"""Hand-kept JSON Schemas for the custom resources deploy/ uses.

The Kubernetes schemas come from the ``kubernetes-validate`` package; no registry ships the CRD schemas
of the Prometheus Operator (ServiceMonitor, PrometheusRule) or Strimzi (KafkaTopic, KafkaUser) in a form
we can install, so these cover the fields we write: required fields, types, and the closed vocabularies
(ACL operations, resource types, severities) where a typo would only surface on the cluster.
They follow the upstream CRDs (monitoring.coreos.com/v1, kafka.strimzi.io/v1beta2) and reject unknown
fields at the levels we use, so a misspelled key fails here rather than being dropped by the operator.
"""

from __future__ import annotations

from typing import Any

_METADATA: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}
_STRIMZI_METADATA: dict[str, Any] = {
    **_METADATA,
    # The Topic and User Operators only act on resources labelled with their cluster.
    "required": ["name", "labels"],
    "properties": {
        **_METADATA["properties"],
        "labels": {
            "type": "object",
            "required": ["strimzi.io/cluster"],
            "additionalProperties": {"type": "string"},
        },
    },
}


def _resource(api_version: str, kind: str, spec: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
        "additionalProperties": False,
    }


# Prometheus durations as the operator's CRDs accept them ("30s", "1h30m", "0").
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
                "additionalProperties": False,
            },
            "jobLabel": {"type": "string"},
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "scheme": {"enum": ["http", "https"]},
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
    _METADATA,
)

_RULE = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Z][A-Za-z0-9]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": _DURATION,
        "labels": {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
            "additionalProperties": {"type": "string"},
        },
        "annotations": {
            "type": "object",
            "required": ["summary", "description", "runbook_url"],
            "additionalProperties": {"type": "string"},
        },
    },
    "additionalProperties": False,
}

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string"},
                        "interval": _DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": _RULE},
                    },
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    },
    _METADATA,
)

KAFKA_TOPIC = _resource(
    "kafka.strimzi.io/v1beta2",
    "KafkaTopic",
    {
        "type": "object",
        "required": ["partitions", "replicas"],
        "properties": {
            "topicName": {"type": "string"},
            "partitions": {"type": "integer", "minimum": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
            # Topic configs are strings or numbers; keys are Kafka topic-level config names.
            "config": {
                "type": "object",
                "propertyNames": {"pattern": r"^[a-z]+(\.[a-z]+)*$"},
                "additionalProperties": {"type": ["string", "integer", "boolean", "number"]},
            },
        },
        "additionalProperties": False,
    },
    _STRIMZI_METADATA,
)

_ACL_OPERATIONS = [
    "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "AlterConfigs",
    "DescribeConfigs", "IdempotentWrite", "All",
]
_ACL = {
    "type": "object",
    "required": ["resource", "operations"],
    "properties": {
        "type": {"enum": ["allow", "deny"]},
        "host": {"type": "string"},
        "operations": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": _ACL_OPERATIONS}},
        "resource": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                "name": {"type": "string"},
                "patternType": {"enum": ["literal", "prefix"]},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}

KAFKA_USER = _resource(
    "kafka.strimzi.io/v1beta2",
    "KafkaUser",
    {
        "type": "object",
        "required": ["authentication", "authorization"],
        "properties": {
            "authentication": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}},
                "additionalProperties": False,
            },
            "authorization": {
                "type": "object",
                "required": ["type", "acls"],
                "properties": {
                    "type": {"const": "simple"},
                    "acls": {"type": "array", "minItems": 1, "items": _ACL},
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    _STRIMZI_METADATA,
)

SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC,
    ("kafka.strimzi.io/v1beta2", "KafkaUser"): KAFKA_USER,
}
