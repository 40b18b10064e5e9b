"""S3 access shared by the compiler (pinning) and the runtime (downloading), through boto3.

Endpoint, region and credentials come from the standard AWS environment and config files (AWS_ENDPOINT_URL,
AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), so a user's existing setup and S3-compatible stores work. Nothing here ever
puts a credential into a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

__all__ = ["S3Object", "S3Problem", "check_unchanged", "client", "list_objects", "opener", "split"]


class S3Problem(Exception):
    """A failure a user can act on: ``str()`` says what, ``hint`` what to do; ``changed`` when a pinned object
    is no longer the one the plan names."""

    def __init__(self, message: str, hint: str = "", changed: bool = False):
        super().__init__(message)
        self.hint, self.changed = hint, changed


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    path: str  # relative to the prefix (the object's name for a single object)
    size: int
    etag: str
    version_id: str | None

    def pin(self) -> dict[str, Any]:
        return {"source": "s3", "bucket": self.bucket, "key": self.key, "etag": self.etag, "version_id": self.version_id}


def split(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


def client() -> Any:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise S3Problem("s3:// inputs need boto3, which is not installed", "pip install 'ftc[s3]'") from None

    # a new session reads the environment now (boto3's default session keeps the first credentials it saw);
    # bounded: an unreachable endpoint fails in seconds, not after minutes of retries
    session = boto3.session.Session()
    return session.client("s3", config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"}))


def _explain(exc: Exception, bucket: str, key: str) -> S3Problem:
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = f"s3://{bucket}/{key}"
    if isinstance(exc, NoCredentialsError):
        return S3Problem(f"{where}: no AWS credentials found", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE")
    if isinstance(exc, EndpointConnectionError) or type(exc).__name__ in ("ConnectTimeoutError", "ReadTimeoutError"):
        return S3Problem(f"{where}: cannot reach the S3 endpoint ({type(exc).__name__})", "check AWS_ENDPOINT_URL and the network")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            return S3Problem(f"{where}: bucket {bucket!r} does not exist", "check the bucket name")
        if code in ("NoSuchKey", "404", "NotFound"):
            return S3Problem(f"{where}: no such object or prefix", "check the key; a folder is a prefix ending in /")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
            return S3Problem(f"{where}: access denied ({code}): the credentials in the environment were refused", "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket's permissions")
        if code in ("PreconditionFailed", "412", "NoSuchVersion", "InvalidArgument"):
            return S3Problem(f"{where}: the object changed since the plan was compiled ({code})", "restore the pinned version, or recompile the spec", changed=True)
        return S3Problem(f"{where}: S3 error {code}", "")
    return S3Problem(f"{where}: {type(exc).__name__}", "")


def list_objects(s3: Any, uri: str) -> list[S3Object]:
    """The object at ``uri``, or every object under it when it is a prefix (a folder). Raises :class:`S3Problem`."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split(uri)
    try:
        if key and not key.endswith("/"):
            try:
                head = s3.head_object(Bucket=bucket, Key=key)
                return [S3Object(bucket, key, key.rsplit("/", 1)[-1], head["ContentLength"], head["ETag"].strip('"'), head.get("VersionId"))]
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) not in ("404", "NoSuchKey", "NotFound"):
                    raise
            key += "/"
        found = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                rel = item["Key"][len(key):]
                if not rel or rel.endswith("/") or any(part.startswith(".") for part in rel.split("/")):
                    continue
                head = s3.head_object(Bucket=bucket, Key=item["Key"])  # the version id, which listings omit
                found.append(S3Object(bucket, item["Key"], rel, item["Size"], item["ETag"].strip('"'), head.get("VersionId")))
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, bucket, key) from None
    if not found:
        raise S3Problem(f"s3://{bucket}/{key}: no such object or prefix", "check the key; a folder is a prefix ending in /")
    return sorted(found, key=lambda o: o.path)


def check_unchanged(s3: Any, obj: S3Object) -> None:
    """Raise :class:`S3Problem` (``changed``) unless the source still holds the pinned object: its version, or
    (unversioned) an object with the pinned ETag."""
    from botocore.exceptions import BotoCoreError, ClientError

    args: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
    if obj.version_id:
        args["VersionId"] = obj.version_id
    try:
        head = s3.head_object(**args)
    except (ClientError, BotoCoreError) as exc:
        problem = _explain(exc, obj.bucket, obj.key)
        if "no such object" in str(problem):
            problem = S3Problem(f"s3://{obj.bucket}/{obj.key}: the pinned object is gone", "restore it, or recompile the spec", changed=True)
        raise problem from None
    found = head["ETag"].strip('"')
    if found != obj.etag:
        raise S3Problem(f"s3://{obj.bucket}/{obj.key}: the object changed since the plan was compiled (ETag {obj.etag} pinned, {found} found)", "restore the pinned object, or recompile the spec", changed=True)


def opener(s3: Any, obj: S3Object):
    """``open(start)`` -> chunks of exactly the pinned object (by version id, else by ETag) from byte ``start``."""
    from botocore.exceptions import BotoCoreError, ClientError

    def open_from(start: int) -> Iterator[bytes]:
        args: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            args["VersionId"] = obj.version_id
        else:
            args["IfMatch"] = f'"{obj.etag}"'
        if start:
            args["Range"] = f"bytes={start}-"
        try:
            body = s3.get_object(**args)["Body"]
            yield from body.iter_chunks(1 << 20)
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, obj.bucket, obj.key) from None

    return open_from
