"""S3 (``s3://bucket/key``) through boto3: objects pinned by ETag and, in versioned buckets, version id.

Endpoint, region and credentials come from the standard AWS environment and config files (AWS_ENDPOINT_URL,
AWS_PROFILE, AWS_ACCESS_KEY_ID, ...), so a user's existing setup and S3-compatible stores work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .objects import TRANSIENT_HINT, RemoteObject, RemoteProblem, store_timeouts

__all__ = ["S3Store"]

_MISSING = ("NoSuchKey", "404", "NotFound")
_TRANSIENT = ("InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "500", "502", "503", "504")


def _endpoint(given: str | None = None) -> str:
    """The S3 endpoint as shown in a message: ``given`` (a DVC remote's endpointurl) or the environment's, redacted
    (an endpoint URL may hold user:password@)."""
    import os

    from ftc.spec.text import redact

    return redact(given or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "(AWS)")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def _explain(exc: Exception, uri: str, endpoint: str | None = None) -> RemoteProblem:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return RemoteProblem(
            f"{uri}: no AWS credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
            "denied",
        )
    if not isinstance(exc, ClientError):  # connection refused, timeouts
        return RemoteProblem(
            f"{uri}: cannot reach the S3 endpoint {_endpoint(endpoint)} ({type(exc).__name__})",
            "check AWS_ENDPOINT_URL and the network",
            "unreachable",
        )
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if status >= 500 or code in _TRANSIENT:  # still failing after the retries
        return RemoteProblem(
            f"{uri}: the S3 endpoint {_endpoint(endpoint)} failed ({code or status})", TRANSIENT_HINT, "unreachable"
        )
    if code == "NoSuchBucket":
        return RemoteProblem(f"{uri}: bucket {_split(uri)[0]!r} does not exist", "check the bucket name")
    if code in _MISSING:
        return RemoteProblem(f"{uri}: no such object or prefix", "check the key; a folder is a prefix ending in /")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"):
        return RemoteProblem(
            f"{uri}: access denied ({code}): the credentials in the environment were refused",
            "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE and the bucket's permissions",
            "denied",
        )
    if code in ("PreconditionFailed", "412", "NoSuchVersion", "InvalidArgument"):
        return RemoteProblem(
            f"{uri}: the object changed since the plan was compiled ({code})",
            "restore the pinned version, or recompile the spec",
            reason="changed",
        )
    return RemoteProblem(f"{uri}: S3 error {code}")


def _etag_is_md5(etag: str, head: dict[str, Any]) -> bool:
    """Whether S3 vouches that ``etag`` is the md5 of the object's bytes: an object uploaded in one part (a multipart
    ETag ends in -N) and not encrypted with KMS or a customer key (whose ETags are not digests)."""
    import re

    encryption = str(head.get("ServerSideEncryption", ""))
    return (
        bool(re.fullmatch(r"[0-9a-f]{32}", etag)) and "kms" not in encryption and not head.get("SSECustomerAlgorithm")
    )


def _pinned_problem(exc: Exception, uri: str, endpoint: str | None = None) -> RemoteProblem:
    """What went wrong with an object the plan pins: one that is no longer there has changed since compiling."""
    problem = _explain(exc, uri, endpoint)
    if "no such object" in str(problem):
        return RemoteProblem(
            f"{uri}: the pinned object is gone",
            "restore it (where versions are kept), or recompile the spec",
            "gone",
        )
    return problem


class S3Store:
    def __init__(self, endpoint_url: str | None = None) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise RemoteProblem(
                "s3:// locations need boto3, which is not installed", "pip install 'ftc[s3]'", "unconfigured"
            ) from None
        from botocore.exceptions import BotoCoreError, ClientError

        self._errors = (BotoCoreError, ClientError)
        self._endpoint_url = endpoint_url
        # a new session reads the environment now (boto3's default session keeps the first credentials it saw);
        # bounded: an unreachable endpoint fails in seconds, not after minutes of retries
        connect, read = store_timeouts()
        session = boto3.session.Session()
        # two attempts in all (botocore's "max_attempts" would count retries only): a dead endpoint fails its first
        # request in 2 x (connect or read time-out)
        retries = {"total_max_attempts": 2, "mode": "standard"}
        config = Config(connect_timeout=connect, read_timeout=read, retries=retries)
        self._s3 = session.client("s3", config=config, endpoint_url=endpoint_url)
        # downloads come after a request the endpoint answered: a slow stream may pause longer than an answer
        data = Config(connect_timeout=connect, read_timeout=4 * read, retries=retries, max_pool_connections=16)
        self._data = session.client("s3", config=data, endpoint_url=endpoint_url)

    def _object(self, bucket: str, key: str, path: str, head: dict[str, Any]) -> RemoteObject:
        etag = head["ETag"].strip('"')
        pin = {"etag": etag}
        if head.get("VersionId") and head["VersionId"] != "null":
            pin["version_id"] = head["VersionId"]
        if _etag_is_md5(etag, head):  # then every download of it is checked against it
            pin["md5"] = etag
        return RemoteObject(f"s3://{bucket}/{key}", path, head["ContentLength"], pin)

    def list(self, uri: str) -> list[RemoteObject]:
        bucket, key = _split(uri)
        try:
            if key and not key.endswith("/"):
                try:
                    return [
                        self._object(bucket, key, key.rsplit("/", 1)[-1], self._s3.head_object(Bucket=bucket, Key=key))
                    ]
                except self._errors[1] as exc:
                    if str(exc.response.get("Error", {}).get("Code")) not in _MISSING:
                        raise
                key += "/"
            found = []
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
                for item in page.get("Contents", []):
                    rel = item["Key"][len(key) :]
                    if rel and not rel.endswith("/") and not any(part.startswith(".") for part in rel.split("/")):
                        head = self._s3.head_object(Bucket=bucket, Key=item["Key"])  # listings omit the version id
                        found.append(self._object(bucket, item["Key"], rel, head))
        except self._errors as exc:
            raise _explain(exc, uri, self._endpoint_url) from None
        if not found:
            raise RemoteProblem(f"{uri}: no such object or prefix", "check the key; a folder is a prefix ending in /")
        return sorted(found, key=lambda o: o.path)

    def _args(self, obj: RemoteObject) -> dict[str, Any]:
        bucket, key = _split(obj.uri)
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if obj.pin.get("version_id"):
            args["VersionId"] = obj.pin["version_id"]
        return args

    def check_unchanged(self, obj: RemoteObject) -> None:
        try:
            head = self._s3.head_object(**self._args(obj))
        except self._errors as exc:
            raise _pinned_problem(exc, obj.uri, self._endpoint_url) from None
        found = head["ETag"].strip('"')
        if found != obj.pin["etag"]:
            raise RemoteProblem(
                f"{obj.uri}: the object changed since the plan was compiled "
                f"(ETag {obj.pin['etag']} pinned, {found} found)",
                "restore the pinned object, or recompile the spec",
                reason="changed",
            )

    def opener(self, obj: RemoteObject) -> Callable[[int, int | None], Iterator[bytes]]:
        def open_from(start: int, end: int | None) -> Iterator[bytes]:
            args = self._args(obj)
            if "VersionId" not in args and "etag" in obj.pin:  # (a DVC object is named by its md5: checked after)
                args["IfMatch"] = f'"{obj.pin["etag"]}"'
            if start or end is not None:
                args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
            try:
                yield from self._data.get_object(**args)["Body"].iter_chunks(1 << 20)
            except self._errors as exc:
                raise _pinned_problem(exc, obj.uri, self._endpoint_url) from None

        return open_from

    # writing: a run's output_dir may be a prefix (runtime/launch/publish.py)

    def names(self, uri: str) -> list[str]:
        """The names of every object under the prefix ``uri`` (ending in /), relative to it; [] when none."""
        bucket, key = _split(uri)
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            return sorted(item["Key"][len(key) :] for page in pages for item in page.get("Contents", []))
        except self._errors as exc:
            raise _explain(exc, uri, self._endpoint_url) from None

    def read_small(self, uri: str, limit: int) -> bytes | None:
        """The bytes of the object at ``uri`` (None when there is none), refused past ``limit`` bytes."""
        bucket, key = _split(uri)
        try:
            answer = self._s3.get_object(Bucket=bucket, Key=key)
            if answer["ContentLength"] > limit:
                raise RemoteProblem(f"{uri}: {answer['ContentLength']} bytes, more than the {limit} expected")
            return answer["Body"].read(limit + 1)[:limit]
        except self._errors as exc:
            problem = _explain(exc, uri, self._endpoint_url)
            if "no such object" in str(problem):
                return None
            raise problem from None

    def put_file(self, uri: str, path: str) -> None:
        """Upload the file at ``path`` to ``uri`` (in parts, several at once, when it is large)."""
        from boto3.s3.transfer import TransferConfig

        bucket, key = _split(uri)
        try:
            self._data.upload_file(path, bucket, key, Config=TransferConfig(max_concurrency=8))
        except self._errors as exc:
            raise _explain(exc, uri, self._endpoint_url) from None
        except Exception as exc:  # boto3's S3UploadFailedError wraps the ClientError
            cause = exc.__context__ if isinstance(exc.__context__, self._errors) else exc
            raise _explain(cause, uri, self._endpoint_url) from None

    def put_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = _split(uri)
        try:
            self._s3.put_object(Bucket=bucket, Key=key, Body=data)
        except self._errors as exc:
            raise _explain(exc, uri, self._endpoint_url) from None

    def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; one that is not there is no error (in a versioned bucket its older
        versions stay, as the bucket's own rules keep them)."""
        bucket, key = _split(uri)
        try:
            self._s3.delete_object(Bucket=bucket, Key=key)
        except self._errors as exc:
            problem = _explain(exc, uri, self._endpoint_url)
            if "no such object" not in str(problem):
                raise problem from None
