"""The S3 side of the archive: a thin, blocking boto3 wrapper (callers run it via ``asyncio.to_thread``).

Every failure comes out as a paystream error: a missing bucket, or a request S3 refuses (access denied, an
unusable KMS key, an encryption it does not offer) is a :class:`ConfigurationError` (an operator must fix
it), anything else — connection refused, timeouts, 5xx — an :class:`InfrastructureError` the caller
retries. Every upload asks for server-side encryption (:class:`Encryption`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from paystream.config import S3Settings
from paystream.errors import ConfigurationError, InfrastructureError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}
# Answers that retrying will not change: permissions, the KMS key, an encryption the store does not offer.
_REFUSED_CODES = {"AccessDenied", "403", "Forbidden", "InvalidArgument", "NotImplemented", "KMS.NotFoundException",
                  "KMS.DisabledException", "KMS.KMSInvalidStateException", "KMS.AccessDeniedException"}
_NO_LIFECYCLE_CODES = {"NoSuchLifecycleConfiguration"}


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """A bucket's lifecycle configuration, as S3 returns it (rules as plain dicts, passed back unchanged)."""

    rules: list[dict[str, Any]]
    transition_default_minimum_object_size: str | None = None


@dataclass(frozen=True, slots=True)
class Encryption:
    """Server-side encryption: what every upload asks for, or what S3 says an object has."""

    algorithm: Literal["aws:kms", "AES256"] | None  # None: not encrypted (as S3 reports it)
    kms_key_id: str | None = None

    @classmethod
    def configured(cls, s3: S3Settings) -> Encryption:
        """SSE-KMS with the configured key, or SSE-S3 when no key is set."""
        return cls("aws:kms", s3.kms_key_id) if s3.kms_key_id else cls("AES256")

    def put_arguments(self) -> dict[str, str]:
        arguments: dict[str, str] = {"ServerSideEncryption": self.algorithm} if self.algorithm else {}
        if self.kms_key_id:
            arguments["SSEKMSKeyId"] = self.kms_key_id
        return arguments

    def describe(self) -> str:
        if self.algorithm == "aws:kms":
            return f"SSE-KMS with key {self.kms_key_id or '(the bucket default)'}"
        return "SSE-S3 (AES256)" if self.algorithm == "AES256" else "no server-side encryption"


class ArchiveStore:
    """One bucket of the archive. Thread-safe (boto3 clients are)."""

    def __init__(
        self,
        s3: S3Settings,
        *,
        bucket: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
    ) -> None:
        self.bucket = bucket or s3.bucket
        self.prefix = s3.prefix
        self.encryption = Encryption.configured(s3)
        self.endpoint = s3.endpoint_url or "AWS S3"
        # Our callers own the retry policy (backoff, keep place); botocore only retries once quickly.
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": 2, "mode": "standard"},
        )
        self._client: S3Client = boto3.client(
            "s3",
            endpoint_url=s3.endpoint_url or None,
            region_name=s3.region,
            config=config,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
        )

    def _fail(self, action: str, exc: Exception) -> Exception:
        if isinstance(exc, NoCredentialsError):
            return ConfigurationError(
                "no AWS credentials for S3: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (any values for a "
                "local moto server), a profile, or an instance role"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING_BUCKET_CODES:
                return ConfigurationError(f"S3 bucket {self.bucket!r} does not exist at {self.endpoint}")
            if code in _REFUSED_CODES:
                message = exc.response.get("Error", {}).get("Message") or "no reason given"
                return ConfigurationError(
                    f"S3 refused {action} in bucket {self.bucket!r} at {self.endpoint}: {code}: {message}"
                )
        return InfrastructureError(f"S3 {action} on {self.endpoint} failed: {type(exc).__name__}: {exc}")

    def check_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("head_bucket", exc) from exc

    def put(self, key: str, data: bytes, *, content_type: str = "application/gzip") -> None:
        """Upload ``data`` encrypted as configured. Archive objects are .gz files without Content-Encoding,
        so no client unzips them behind our back."""
        try:
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type,
                **self.encryption.put_arguments(),  # type: ignore[arg-type]
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"put {key}", exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"delete {key}", exc) from exc

    def stored_encryption(self, key: str) -> Encryption:
        """How S3 says ``key`` is encrypted (HEAD: the object's own headers, whatever the request asked)."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"head {key}", exc) from exc
        algorithm = head.get("ServerSideEncryption")
        known = algorithm if algorithm in ("aws:kms", "AES256") else None
        return Encryption(known, head.get("SSEKMSKeyId"))

    def lifecycle(self) -> Lifecycle:
        """The bucket's lifecycle configuration (none: no rules)."""
        try:
            answer = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in _NO_LIFECYCLE_CODES:
                return Lifecycle([])
            raise self._fail("get lifecycle configuration", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("get lifecycle configuration", exc) from exc
        return Lifecycle([dict(rule) for rule in answer.get("Rules", [])],
                         answer.get("TransitionDefaultMinimumObjectSize"))

    def put_lifecycle(self, lifecycle: Lifecycle) -> None:
        """Replace the bucket's lifecycle configuration (S3 has no per-rule update)."""
        extra: dict[str, Any] = {}
        if lifecycle.transition_default_minimum_object_size:
            # Not part of the rules, but reset to S3's default when a PUT leaves it out.
            extra["TransitionDefaultMinimumObjectSize"] = lifecycle.transition_default_minimum_object_size
        try:
            self._client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": lifecycle.rules},  # type: ignore[typeddict-item]
                **extra,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("put lifecycle configuration", exc) from exc

    def get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"get {key}", exc) from exc

    def list(self, prefix: str) -> Iterator[StoredObject]:
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"], int(item["Size"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"list {prefix}", exc) from exc
