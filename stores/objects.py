"""What every store deals in: an object (URI, size, the store's pin), the problems a store reports, the interface a
store offers, and a local folder read as a store (a DVC remote can be one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "LocalStore",
    "RemoteObject",
    "RemoteProblem",
    "Store",
    "TRANSIENT_HINT",
    "WritableStore",
    "store_timeouts",
]

#: what to do when a store failed in a way that may pass (a 5xx after the retries, a timed-out request)
TRANSIENT_HINT = "the store failed or did not answer; try again (check the endpoint and the network if it persists)"


def store_timeouts() -> tuple[float, float]:
    """(connect, read) time-outs in seconds for every store request: FTC_STORE_CONNECT_TIMEOUT (default 5) and
    FTC_STORE_READ_TIMEOUT (default 6; the longest wait for an answer, four times that for the next bytes of a
    download). With one retry, an endpoint that accepts connections and never answers fails in about 13 s."""
    import math
    import os

    found = []
    for name, default in (("FTC_STORE_CONNECT_TIMEOUT", 5.0), ("FTC_STORE_READ_TIMEOUT", 6.0)):
        text = os.environ.get(name, "")
        try:
            value = float(text) if text else default
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= 3600):
            raise RemoteProblem(
                f"{name}={text!r}: not a number of seconds", f"set {name} to seconds, e.g. 10", "unconfigured"
            )
        found.append(value)
    return found[0], found[1]


class RemoteProblem(Exception):
    """A failure a user can act on: ``str()`` says what, ``hint`` what to do, ``reason`` why: "input" (not found),
    "denied", "unreachable", "unconfigured" (see ftc.errors.INPUT_EXIT_CODES), "changed" when a pinned object is
    no longer what the plan names, or "gone" when it is no longer there at all (also a change, for a run; for a
    reproduction, an input that cannot be fetched). Never holds a credential."""

    def __init__(self, message: str, hint: str = "", reason: str = "input"):
        super().__init__(message)
        self.hint, self.reason = hint, reason

    @property
    def changed(self) -> bool:
        return self.reason in ("changed", "gone")


@dataclass(frozen=True)
class RemoteObject:
    uri: str  # of the object itself
    path: str  # relative to the folder (its file name for a single object)
    size: int
    #: the source's identity of these bytes (S3: etag, version_id; GCS: generation, md5, crc32c)
    pin: dict[str, Any] = field(hash=False)

    def cache_key(self) -> dict[str, Any]:
        return {"uri": self.uri, **self.pin}

    def md5_hex(self) -> str | None:
        """The md5 of the bytes as the store vouches for them (GCS's md5Hash, base64; a DVC object's name, hex),
        to check a download against; None when the store gives none."""
        import base64
        import binascii
        import re

        md5 = self.pin.get("md5")
        if not isinstance(md5, str):
            return None
        if re.fullmatch(r"[0-9a-f]{32}", md5):
            return md5
        try:
            raw = base64.b64decode(md5, validate=True)
        except (binascii.Error, ValueError):
            return None
        return raw.hex() if len(raw) == 16 else None


class Store(Protocol):
    def list(self, uri: str) -> list[RemoteObject]: ...
    def check_unchanged(self, obj: RemoteObject) -> None: ...
    def opener(self, obj: RemoteObject) -> Callable[[int, int | None], Iterator[bytes]]: ...


class WritableStore(Store, Protocol):
    """A store a run publishes its checkpoints to (S3, GCS: ``output_dir: s3://…/``); URIs name objects, and a
    prefix ends in /."""

    def names(self, uri: str) -> list[str]:
        """The names of every object under the prefix ``uri``, relative to it; [] when none."""
        ...

    def read_small(self, uri: str, limit: int) -> bytes | None:
        """The bytes of the object at ``uri`` (None when there is none), refused past ``limit`` bytes."""
        ...

    def put_file(self, uri: str, path: str) -> None: ...
    def put_bytes(self, uri: str, data: bytes) -> None: ...

    def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; one that is not there is no error."""
        ...


class LocalStore:
    """Files in a local folder, read as a store: for DVC remotes that are folders (shared disks, NFS)."""

    @staticmethod
    def _path(uri: str) -> str:
        return uri.removeprefix("file://")

    def list(self, uri: str) -> list[RemoteObject]:
        import os

        try:
            size = os.stat(self._path(uri)).st_size
        except FileNotFoundError:
            raise RemoteProblem(f"{uri}: no such file", "check the path") from None
        except PermissionError:
            raise RemoteProblem(f"{uri}: permission denied", "make it readable by this user", "denied") from None
        return [RemoteObject(uri, uri.rsplit("/", 1)[-1], size, {})]

    def check_unchanged(self, obj: RemoteObject) -> None:
        self.list(obj.uri)

    def opener(self, obj: RemoteObject) -> Callable[[int, int | None], Iterator[bytes]]:
        def open_from(start: int, end: int | None) -> Iterator[bytes]:
            try:
                yield from read(start, end)
            except FileNotFoundError:
                raise RemoteProblem(
                    f"{obj.uri}: the pinned file is gone",
                    "restore it (a `dvc gc` may have removed it), or recompile the spec",
                    "gone",
                ) from None
            except PermissionError:
                raise RemoteProblem(
                    f"{obj.uri}: permission denied", "make it readable by this user", "denied"
                ) from None
            except OSError as exc:
                raise RemoteProblem(
                    f"{obj.uri}: cannot be read ({exc.strerror or exc})",
                    "check the disk or network mount",
                    "unreachable",
                ) from None

        def read(start: int, end: int | None) -> Iterator[bytes]:
            with open(self._path(obj.uri), "rb") as f:
                f.seek(start)
                left = None if end is None else end - start
                while left is None or left > 0:
                    chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
                    if not chunk:
                        return
                    if left is not None:
                        left -= len(chunk)
                    yield chunk

        return open_from
