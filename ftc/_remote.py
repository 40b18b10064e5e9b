"""Object stores (S3, GCS) behind one small interface, for the compiler (pinning) and the runtime (downloading).

A store lists the object or the folder (prefix) at a URI with each object's identity (S3: ETag and version id;
GCS: generation and hashes), checks that the source still holds a pinned object, and streams its bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

__all__ = ["RemoteObject", "RemoteProblem", "Store", "store_for"]


class RemoteProblem(Exception):
    """A failure a user can act on: ``str()`` says what, ``hint`` what to do; ``changed`` when a pinned object is
    no longer what the plan names. Never holds a credential."""

    def __init__(self, message: str, hint: str = "", changed: bool = False):
        super().__init__(message)
        self.hint, self.changed = hint, changed


@dataclass(frozen=True)
class RemoteObject:
    uri: str  # of the object itself
    path: str  # relative to the folder (its file name for a single object)
    size: int
    #: the source's identity of these bytes (S3: etag, version_id; GCS: generation, md5, crc32c)
    pin: dict[str, Any] = field(hash=False)

    def cache_key(self) -> dict[str, Any]:
        return {"uri": self.uri, **self.pin}


class Store(Protocol):
    def list(self, uri: str) -> list[RemoteObject]: ...
    def check_unchanged(self, obj: RemoteObject) -> None: ...
    def opener(self, obj: RemoteObject) -> Callable[[int, int | None], Iterator[bytes]]: ...


def store_for(uri: str) -> Store:
    """The store for ``uri``'s scheme (clients read credentials from the environment now)."""
    if uri.startswith("s3://"):
        from ._s3 import S3Store

        return S3Store()
    if uri.startswith("gs://"):
        from ._gcs import GcsStore

        return GcsStore()
    raise RemoteProblem(f"{uri}: not an object store URI (s3:// or gs://)")
