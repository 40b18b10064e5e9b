"""Google Cloud Storage (``gs://bucket/object``) through google-cloud-storage: objects pinned by generation (the
exact bytes, even after an overwrite) with their md5 and crc32c.

Credentials come from the environment (Application Default Credentials); with STORAGE_EMULATOR_HOST set, an
emulator is used without credentials.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from .objects import TRANSIENT_HINT, RemoteObject, RemoteProblem, store_timeouts

__all__ = ["GcsStore"]

_PIECE = 8 << 20


def _endpoint() -> str:
    from ftc.spec.text import redact  # the emulator's address may hold user:password@

    return redact(os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://") :].partition("/")
    return bucket, name


class GcsStore:
    def __init__(self) -> None:
        try:
            from google.api_core import exceptions
            from google.api_core.retry import Retry
            from google.cloud import storage
        except ImportError:
            raise RemoteProblem(
                "gs:// locations need google-cloud-storage, which is not installed",
                "pip install 'ftc[gcs]'",
                "unconfigured",
            ) from None
        self._exceptions = exceptions
        connect, read = store_timeouts()
        self._timeout = (connect, read)
        # bounded: a dead endpoint fails in about two attempts' time, not after minutes of retries
        self._retry = Retry(timeout=connect + read, initial=0.5, maximum=2.0)
        try:
            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._client = storage.Client(
                    project=os.environ.get("GOOGLE_CLOUD_PROJECT", "ftc"), credentials=AnonymousCredentials()
                )
            else:
                self._client = storage.Client()
        except Exception as exc:  # google.auth's DefaultCredentialsError, among others
            raise RemoteProblem(
                f"gs://: no Google Cloud credentials ({type(exc).__name__})",
                "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
                "denied",
            ) from None

    def _explain(self, exc: Exception, uri: str) -> RemoteProblem:
        e = self._exceptions
        if isinstance(exc, e.RetryError) and isinstance(exc.cause, Exception):  # retried until the deadline
            exc = exc.cause
        if isinstance(exc, e.NotFound):
            return RemoteProblem(f"{uri}: no such bucket, object or prefix", "check the bucket and object names")
        if isinstance(exc, (e.Forbidden, e.Unauthorized)):
            return RemoteProblem(
                f"{uri}: access denied: the credentials in the environment were refused",
                "check GOOGLE_APPLICATION_CREDENTIALS and the bucket's permissions",
                "denied",
            )
        if isinstance(exc, e.PreconditionFailed):
            return RemoteProblem(
                f"{uri}: the object changed since the plan was compiled (its generation was replaced)",
                "recompile the spec (a restored object is a new generation)",
                "changed",
            )
        if isinstance(exc, (e.ServerError, e.TooManyRequests)):
            return RemoteProblem(f"{uri}: GCS at {_endpoint()} failed ({exc.code})", TRANSIENT_HINT, "unreachable")
        if isinstance(exc, e.GoogleAPICallError):
            return RemoteProblem(f"{uri}: GCS error {exc.code}")
        return RemoteProblem(
            f"{uri}: cannot reach GCS at {_endpoint()} ({type(exc).__name__})",
            "check the network (and STORAGE_EMULATOR_HOST)",
            "unreachable",
        )

    @staticmethod
    def _object(bucket: str, blob: Any, path: str) -> RemoteObject:
        pin = {"generation": str(blob.generation), "md5": blob.md5_hash, "crc32c": blob.crc32c}
        return RemoteObject(f"gs://{bucket}/{blob.name}", path, int(blob.size), {k: v for k, v in pin.items() if v})

    def list(self, uri: str) -> list[RemoteObject]:
        bucket_name, name = _split(uri)
        try:
            bucket = self._client.bucket(bucket_name)
            if name and not name.endswith("/"):
                blob = bucket.get_blob(name, retry=self._retry, timeout=self._timeout)
                if blob is not None:
                    return [self._object(bucket_name, blob, name.rsplit("/", 1)[-1])]
                name += "/"
            found = []
            for blob in self._client.list_blobs(bucket_name, prefix=name, retry=self._retry, timeout=self._timeout):
                rel = blob.name[len(name) :]
                if rel and not rel.endswith("/") and not any(part.startswith(".") for part in rel.split("/")):
                    found.append(self._object(bucket_name, blob, rel))
            if not found and not bucket.exists(retry=self._retry, timeout=self._timeout):
                raise RemoteProblem(f"{uri}: bucket {bucket_name!r} does not exist", "check the bucket name")
        except RemoteProblem:
            raise
        except self._exceptions.NotFound:
            raise RemoteProblem(f"{uri}: bucket {bucket_name!r} does not exist", "check the bucket name") from None
        except Exception as exc:
            raise self._explain(exc, uri) from None
        if not found:
            raise RemoteProblem(f"{uri}: no such object or prefix", "check the name; a folder is a prefix ending in /")
        return sorted(found, key=lambda o: o.path)

    def _blob(self, obj: RemoteObject) -> Any:
        bucket, name = _split(obj.uri)
        return self._client.bucket(bucket).blob(name, generation=int(obj.pin["generation"]))

    def check_unchanged(self, obj: RemoteObject) -> None:
        bucket, name = _split(obj.uri)
        try:
            blob = self._client.bucket(bucket).get_blob(
                name, generation=int(obj.pin["generation"]), retry=self._retry, timeout=self._timeout
            )
        except Exception as exc:
            raise self._explain(exc, obj.uri) from None
        if blob is None:
            raise self._gone(obj)

    def opener(self, obj: RemoteObject) -> Callable[[int, int | None], Iterator[bytes]]:
        def open_from(start: int, end: int | None) -> Iterator[bytes]:
            blob = self._blob(obj)
            stop = obj.size if end is None else end
            try:
                for first in range(start, stop, _PIECE):  # bounded memory: a piece at a time
                    yield blob.download_as_bytes(
                        start=first,
                        end=min(first + _PIECE, stop) - 1,
                        retry=self._retry,
                        timeout=(self._timeout[0], 4 * self._timeout[1]),  # the endpoint answered: a slow stream
                    )
            except self._exceptions.NotFound:
                raise self._gone(obj) from None
            except Exception as exc:
                raise self._explain(exc, obj.uri) from None

        return open_from

    # writing: a run's output_dir may be a prefix (runtime/launch/publish.py)

    def names(self, uri: str) -> list[str]:
        """The names of every object under the prefix ``uri`` (ending in /), relative to it; [] when none."""
        bucket, name = _split(uri)
        try:
            blobs = self._client.list_blobs(bucket, prefix=name, retry=self._retry, timeout=self._timeout)
            return sorted(blob.name[len(name) :] for blob in blobs)
        except self._exceptions.NotFound:
            raise RemoteProblem(f"{uri}: bucket {bucket!r} does not exist", "check the bucket name") from None
        except Exception as exc:
            raise self._explain(exc, uri) from None

    def read_small(self, uri: str, limit: int) -> bytes | None:
        """The bytes of the object at ``uri`` (None when there is none), refused past ``limit`` bytes."""
        bucket, name = _split(uri)
        try:
            blob = self._client.bucket(bucket).get_blob(name, retry=self._retry, timeout=self._timeout)
            if blob is None:
                return None
            if int(blob.size) > limit:
                raise RemoteProblem(f"{uri}: {blob.size} bytes, more than the {limit} expected")
            return blob.download_as_bytes(end=limit - 1, retry=self._retry, timeout=self._timeout)
        except RemoteProblem:
            raise
        except Exception as exc:
            raise self._explain(exc, uri) from None

    def put_file(self, uri: str, path: str) -> None:
        bucket, name = _split(uri)
        try:
            blob = self._client.bucket(bucket).blob(name)
            blob.upload_from_filename(path, retry=self._retry, timeout=(self._timeout[0], 4 * self._timeout[1]))
        except Exception as exc:
            raise self._explain(exc, uri) from None

    def put_bytes(self, uri: str, data: bytes) -> None:
        bucket, name = _split(uri)
        try:
            self._client.bucket(bucket).blob(name).upload_from_string(data, retry=self._retry, timeout=self._timeout)
        except Exception as exc:
            raise self._explain(exc, uri) from None

    def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; one that is not there is no error."""
        bucket, name = _split(uri)
        try:
            self._client.bucket(bucket).blob(name).delete(retry=self._retry, timeout=self._timeout)
        except self._exceptions.NotFound:
            return
        except Exception as exc:
            raise self._explain(exc, uri) from None

    @staticmethod
    def _gone(obj: RemoteObject) -> RemoteProblem:
        return RemoteProblem(
            f"{obj.uri}: generation {obj.pin['generation']} pinned by the plan is gone",
            "recompile the spec (a restored object is a new generation)",
            reason="gone",
        )
