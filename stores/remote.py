"""Object stores (S3, GCS) behind one small interface, for the compiler (pinning) and the runtime (downloading).

A store lists the object or the folder (prefix) at a URI with each object's identity (S3: ETag and version id;
GCS: generation and hashes), checks that the source still holds a pinned object, and streams its bytes.
"""

from __future__ import annotations

from .objects import LocalStore, RemoteObject, RemoteProblem, Store

__all__ = ["LocalStore", "RemoteObject", "RemoteProblem", "Store", "store_for"]


def store_for(uri: str, endpoint_url: str | None = None) -> Store:
    """The store for ``uri``'s scheme (clients read credentials from the environment now); a plain path is a local
    folder (a DVC remote can be one). ``endpoint_url`` overrides the S3 endpoint of the environment."""
    if uri.startswith("s3://"):
        from .s3 import S3Store

        return S3Store(endpoint_url)
    if uri.startswith("gs://"):
        from .gcs import GcsStore

        return GcsStore()
    if "://" not in uri or uri.startswith("file://"):
        return LocalStore()
    raise RemoteProblem(
        f"{uri}: not a location ftc can read (s3://, gs:// or a local folder)",
        "copy the data to one of those, and point the spec (or the DVC remote) at it",
        "unconfigured",
    )
