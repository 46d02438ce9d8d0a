"""The archive is stored encrypted or not at all: the archiver's start-up probe of its bucket.

Every archive object holds raw deliveries (customer names, addresses, card brands and last digits), so
every upload asks for server-side encryption (``ArchiveStore.put``: SSE-KMS with ``s3.kms_key_id``, or
SSE-S3). Asking is not enough: an S3-compatible store may ignore the header, a KMS key may be unusable
by the archiver's role, a bucket policy may refuse the upload. So before consuming anything the archiver
writes a small marker object exactly the way it writes archive objects and reads back (HEAD) how S3
stored it. Anything but "encrypted, with the configured key" stops the archiver with a
:class:`ConfigurationError` that says what to fix; nothing was consumed, so nothing is lost. The marker is
written next to the archive prefix (:func:`probe_key`) and deleted afterwards (without s3:DeleteObject
it stays: harmless, it holds no payment data and is rewritten at every start).

A bucket policy that denies unencrypted uploads (the recommended one, docs/operations.md) lets the probe
and every archive upload through, since both carry the encryption headers such a policy checks.
"""

from __future__ import annotations

import orjson

from paystream.errors import ConfigurationError
from paystream.logs import get_logger
from processors.recovery.archive_store import ArchiveStore, Encryption

log = get_logger(__name__)

PROBE_FOLDER = "_paystream"


def probe_key(prefix: str) -> str:
    """Next to the archive, never inside it: whoever lists the archive prefix (replay, rebuild, an operator's
    ``aws s3 ls``) sees archive objects only, even while an archiver starts. The archiver's role needs
    s3:PutObject and s3:DeleteObject on ``_paystream/*`` for it (docs/operations.md, "Data protection")."""
    base = prefix.strip("/")
    return f"{PROBE_FOLDER}/{base}/encryption-probe" if base else f"{PROBE_FOLDER}/encryption-probe"


def same_key(configured: str, reported: str | None) -> bool:
    """Whether the key S3 reports (usually the key ARN) is the configured one (a key id, ARN or alias).

    An alias cannot be resolved without kms:DescribeKey, which the archiver does not need otherwise: any
    KMS key counts then.
    """
    if configured.startswith("alias/") or ":alias/" in configured:
        return True
    if reported is None:
        return False
    return configured == reported or reported.endswith("/" + configured) or configured.endswith("/" + reported)


def check_stored(wanted: Encryption, stored: Encryption, *, where: str) -> None:
    """Raise :class:`ConfigurationError` unless ``stored`` is the encryption ``wanted`` asked for."""
    if stored.algorithm is None:
        raise ConfigurationError(
            f"{where} was stored WITHOUT server-side encryption although the upload asked for "
            f"{wanted.describe()}: this S3 endpoint ignores the request (an S3-compatible store without "
            "encryption support, e.g. MinIO without a KMS); refusing to archive payment data unencrypted"
        )
    if wanted.algorithm == "aws:kms":
        if stored.algorithm != "aws:kms":
            raise ConfigurationError(
                f"{where} was stored with {stored.describe()}, not {wanted.describe()}: check that the S3 "
                "endpoint supports SSE-KMS"
            )
        if not same_key(wanted.kms_key_id or "", stored.kms_key_id):
            raise ConfigurationError(
                f"{where} was encrypted with KMS key {stored.kms_key_id or '(not reported)'}, not the "
                f"configured {wanted.kms_key_id} (PAYSTREAM_S3__KMS_KEY_ID)"
            )
    # SSE-S3 asked and SSE-KMS stored (a bucket policy or default that insists on KMS) is encrypted all the
    # same: accepted.


def probe_encryption(store: ArchiveStore) -> Encryption:
    """Write the marker object as every archive object is written, check how S3 stored it; return that.

    Raises :class:`ConfigurationError` when S3 refuses the encrypted upload (access denied, a disabled or
    unknown KMS key, a policy) or stores it other than asked; :class:`InfrastructureError` when S3 cannot be
    reached (the caller waits and tries again).
    """
    key = probe_key(store.prefix)
    where = f"the encryption probe s3://{store.bucket}/{key}"
    body = orjson.dumps({"written_by": "paystream archive", "purpose": "checks that uploads are stored encrypted"})
    try:
        store.put(key, body, content_type="application/json")
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"cannot write encrypted objects ({store.encryption.describe()}) to the archive bucket: {exc}. "
            "Check the archiver's permissions (s3:PutObject on the prefix; kms:GenerateDataKey and "
            "kms:Decrypt on the key for SSE-KMS), the KMS key (exists, enabled) and the bucket policy"
        ) from exc
    stored = store.stored_encryption(key)
    check_stored(store.encryption, stored, where=where)
    try:
        store.delete(key)
    except ConfigurationError as exc:
        log.warning("archive_probe_not_deleted", key=key, error=str(exc))
    return stored
