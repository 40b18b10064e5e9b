"""A DVC remote read directly: objects named by their md5 under ``files/md5/`` (DVC 3's layout), in a local folder,
S3 or GCS. Used by the compiler (to look objects up and read data for the checks) and by the runtime (to download
them); neither needs DVC itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ftc.spec.text import redact

from .remote import RemoteObject, RemoteProblem, Store, store_for

__all__ = ["DvcRemote"]


@dataclass(frozen=True)
class DvcRemote:
    url: str  # s3://bucket/prefix, gs://bucket/prefix, or a local folder
    endpoint: str | None = None  # the S3 endpoint the repository's remote config names (endpointurl)

    @cached_property
    def store(self) -> Store:
        return store_for(self.url, self.endpoint)

    @staticmethod
    def cache_key(md5: str) -> dict[str, str]:
        """Content cache key: the md5 alone (checked on download), so every remote holding it shares one copy."""
        return {"dvc_md5": md5}

    def uri(self, md5: str) -> str:
        return f"{self.url.rstrip('/')}/files/md5/{md5[:2]}/{md5[2:]}"

    def object(self, md5: str, what: str, size: int | None = None) -> RemoteObject:
        """The remote's object for ``md5``, named ``what`` (its path in the tracked folder, or for errors); looked up
        in the store unless ``size`` is known from the plan."""
        uri = self.uri(md5)
        if size is not None:
            return RemoteObject(uri, what, size, {"md5": md5})
        try:
            (found,) = self.store.list(uri)
        except RemoteProblem as exc:
            if exc.reason != "input":
                raise
            raise RemoteProblem(
                f"{what} (md5 {md5}) is not in the DVC remote {redact(self.url)}",
                "run `dvc push` in the repository that tracks it",
            ) from None
        return RemoteObject(uri, what, found.size, {"md5": md5})
