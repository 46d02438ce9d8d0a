"""The S3 side of the archive: a thin, blocking boto3 wrapper (callers run it via ``asyncio.to_thread``).

Every failure comes out as a paystream error: a missing bucket is a :class:`ConfigurationError` (an
operator must fix it), anything else — connection refused, timeouts, 5xx — an
:class:`InfrastructureError` the caller retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from paystream.config import S3Settings
from paystream.errors import ConfigurationError, InfrastructureError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_MISSING_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int


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
        return InfrastructureError(f"S3 {action} on {self.endpoint} failed: {type(exc).__name__}: {exc}")

    def check_bucket(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("head_bucket", exc) from exc

    def put(self, key: str, data: bytes) -> None:
        try:
            # Stored as a .gz file (no Content-Encoding), so no client unzips it behind our back.
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/gzip")
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"put {key}", exc) from exc

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
