"""S3 reads and writes, and the raw-images/ -> thumbnails/ key mapping."""

import shutil
from dataclasses import dataclass
from typing import BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from imgpipe.errors import PermanentError, TransientError

# Metadata on every thumbnail: which source version it was made from.
SOURCE_ETAG = "source-etag"
COPY_CHUNK_BYTES = 1024 * 1024
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
CHANGED_CODES = {"412", "PreconditionFailed"}


def thumbnail_key(key: str, raw_prefix: str = "raw-images/", thumb_prefix: str = "thumbnails/"):
    """thumbnails/<the key's path after raw-images/>; PermanentError for a key outside it."""
    if not key.startswith(raw_prefix) or key == raw_prefix:
        raise PermanentError("outside-prefix", f"key is not under {raw_prefix}")
    return thumb_prefix + key[len(raw_prefix) :]


@dataclass(frozen=True)
class Source:
    size: int
    etag: str


class Storage:
    """One bucket's objects, through one shared (thread-safe) S3 client."""

    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket

    def head_source(self, key: str) -> Source:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            raise _classify(e, key) from e
        return Source(size=head["ContentLength"], etag=head["ETag"])

    def download_source(self, key: str, etag: str, file: BinaryIO) -> None:
        """Stream exactly the version that was checked (If-Match the ETag) into `file`."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key, IfMatch=etag)["Body"]
            shutil.copyfileobj(body, file, COPY_CHUNK_BYTES)
            file.flush()
        except (ClientError, BotoCoreError) as e:
            raise _classify(e, key) from e

    def thumbnail_etag_source(self, key: str) -> str | None:
        """The source ETag recorded on an existing thumbnail, or None if there is none."""
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as e:
            # Without s3:ListBucket a missing key answers 403, not 404: both mean "make it".
            if _code(e) in MISSING_CODES | {"403", "AccessDenied", "Forbidden"}:
                return None
            raise _classify(e, key) from e
        return head.get("Metadata", {}).get(SOURCE_ETAG)

    def put_thumbnail(self, key: str, data: bytes, content_type: str, source_etag: str) -> None:
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl="public, max-age=31536000, immutable",
                Metadata={SOURCE_ETAG: source_etag},
            )
        except (ClientError, BotoCoreError) as e:
            raise _classify(e, key) from e


def _code(error: Exception) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return type(error).__name__  # network and timeout errors: transient


def _classify(error: Exception, key: str) -> Exception:
    code = _code(error)
    if code in MISSING_CODES:
        return PermanentError("missing-object", f"{key} does not exist")
    if code in CHANGED_CODES:
        return TransientError(f"{key} changed while it was being read")
    # 403 is usually a policy being fixed, or a deleted source without s3:ListBucket: retry, and
    # let the redrive policy dead-letter it if it persists.
    return TransientError(f"S3 error {code} on {key}")
