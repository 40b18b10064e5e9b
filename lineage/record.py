"""The lineage record: ``lineage.json`` in every checkpoint, a hash chain from the checkpoint to its parents.

A record names every file of its checkpoint (size, sha256) and a root digest over them; its parents (base weights,
an adapter continued) by digest, with their own records embedded, so the whole chain travels with the checkpoint;
the data by pinned identity and sha256; the plan; the environment; the topology; and the results. ``record_id`` is
the sha256 of the canonical JSON of the record without ``record_id`` and ``measured`` (wall time: the one thing two
runs of a plan do not share): editing any of the rest breaks the id, and editing a parent's record breaks the id of
every record that embeds it.

No secrets (credentials never reach a plan, and the record is built from the plan) and no absolute paths of this
machine: a local parent is located relative to the checkpoint (a path the user wrote as absolute stays so).
"""

from __future__ import annotations

import hashlib
import os
import platform
import secrets
from pathlib import Path
from typing import Any

from ftc.errors import LineageBroken
from ftc.spec.canonical import canonical_json, digest_of
from ftc.spec.reading import ChangedSincePinned, MiB, NotReadable, finite_json, read_bounded_text, read_pinned_text
from ftc.stores.hashing import FileDigest, StatCache, hash_file, hash_tree, manifest_digest

__all__ = [
    "LINEAGE_FILE",
    "LINEAGE_VERSION",
    "MAX_CHAIN_DEPTH",
    "MAX_NESTING",
    "MEASURED",
    "REPRODUCTION_FILE",
    "SIGNATURE_FILE",
    "checkpoint_files",
    "checkpoint_parent",
    "checkpoint_section",
    "chain_depth",
    "environment",
    "located",
    "location_of",
    "read_record",
    "record_id_of",
    "record_ids",
    "reproduction_of",
    "seal",
    "too_long",
]

LINEAGE_FILE = "lineage.json"
#: the folder's signature (ftc.lineage.signing), written after the record and over it: never among the files it names
SIGNATURE_FILE = "model.sig"
#: ftc reproduce's verdict, in the rerun's output folder (beside checkpoints/)
REPRODUCTION_FILE = "reproduction.json"
LINEAGE_VERSION = 1
#: the packages whose versions decide what a run computes
KEY_PACKAGES = ("torch", "transformers", "peft", "deepspeed", "accelerate", "safetensors", "tokenizers", "ftc")


#: what was measured, not decided (wall time): it differs between two runs of one plan, so it stays outside the seal
#: and two identical runs have identical record_ids
MEASURED = "measured"


def record_id_of(record: dict[str, Any]) -> str:
    return digest_of({k: v for k, v in record.items() if k not in ("record_id", MEASURED)})


def record_ids(record: dict[str, Any]) -> dict[int, str]:
    """:func:`record_id_of` of ``record`` and of every record embedded in it, keyed by the ``id()`` of each record's
    dict. The same digests, computed in time proportional to the record's size: each record is encoded once, and
    its canonical JSON reused (as bytes) inside the canonical JSON of the record that embeds it, where
    :func:`record_id_of` on each record of a chain of depth d would encode the deepest d times."""
    marker = secrets.token_hex(16)  # where an embedded record's bytes go: text no record can hold by chance
    order, stack = [], [record]
    while stack:  # parents first, so that reversed, every embedded record comes before the one embedding it
        rec = stack.pop()
        order.append(rec)
        stack += _embedded(rec)
    whole: dict[int, list[bytes]] = {}  # a record's canonical JSON, all of it, in pieces
    ids: dict[int, str] = {}
    for rec in reversed(order):
        children: list[tuple[bytes, dict[str, Any]]] = []
        shallow = rec
        if _embedded(rec):
            entries = []
            for entry in rec["parents"]:
                if isinstance(entry, dict) and isinstance(entry.get("lineage"), dict):
                    here = f"{marker}-{len(children)}"
                    children.append((canonical_json(here), entry["lineage"]))
                    entry = {**entry, "lineage": here}
                entries.append(entry)
            shallow = {**rec, "parents": entries}

        whole[id(rec)] = _pieces(shallow, children, whole)
        digest = hashlib.sha256()
        for piece in _pieces({k: v for k, v in shallow.items() if k not in ("record_id", MEASURED)}, children, whole):
            digest.update(piece)
        ids[id(rec)] = "sha256:" + digest.hexdigest()
    return ids


def _pieces(
    document: dict[str, Any], children: list[tuple[bytes, dict[str, Any]]], whole: dict[int, list[bytes]]
) -> list[bytes]:
    """The canonical JSON of ``document``, each embedded record's marker (in ``children``, in order) replaced by
    that record's own canonical JSON (its pieces in ``whole``)."""
    text, out = canonical_json(document), []
    for quoted, child in children:
        before, found, text = text.partition(quoted)
        assert found, "each marker is in the document once"
        out += [before, *whole[id(child)]]
    return [*out, text]


def _embedded(record: Any) -> list[dict[str, Any]]:
    """The parent records embedded whole in ``record``."""
    parents = record.get("parents") if isinstance(record, dict) else None
    if not isinstance(parents, list):
        return []
    return [p["lineage"] for p in parents if isinstance(p, dict) and isinstance(p.get("lineage"), dict)]


def seal(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "record_id": record_id_of(record)}


def checkpoint_files(folder: Path, cache: StatCache | None = None) -> list[FileDigest]:
    """Every file of a checkpoint but its lineage record and its signature, hashed (unchanged files from ``cache``)."""
    return [f for f in hash_tree(folder, cache) if f.path not in (LINEAGE_FILE, SIGNATURE_FILE)]


def checkpoint_section(folder: Path) -> dict[str, Any]:
    files = checkpoint_files(folder)
    return {"files": [f.to_dict() for f in files], "digest": manifest_digest(files)}


#: the most records one chain may hold, the checkpoint's own included: each training stage, export or reproduction
#: adds one, so a real chain stays far below; every reader of a chain (verify, show, diff, report, export) walks
#: at most this many, and a deeper one is refused when it is read
MAX_CHAIN_DEPTH = 64
#: the deepest JSON nesting a record may have: a chain of MAX_CHAIN_DEPTH records nests 3 levels per record
#: (record -> parents -> entry -> lineage) plus a few inside each; more is a record built to exhaust a reader
MAX_NESTING = 4 * MAX_CHAIN_DEPTH + 16


def _shape(document: Any) -> tuple[int, bool]:
    """How deeply ``document`` (parsed JSON) nests objects and arrays, and whether it holds an integer no reader can
    format as a number (past 64 bits: JSON integers have no bound), walked without recursion."""
    deepest, huge, stack = 0, False, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        huge = huge or any(type(v) is int and not -(2**63) <= v < 2**63 for v in value)
        if depth <= MAX_NESTING:  # deeper is refused whatever lies below
            stack += [(v, depth + 1) for v in value if isinstance(v, (dict, list))]
    return deepest, huge


def chain_depth(record: dict[str, Any]) -> int:
    """How many records the longest chain of ``record`` holds (1: no embedded parent record), walked without
    recursion; it stops counting past :data:`MAX_CHAIN_DEPTH`."""
    deepest, stack = 0, [(record, 1)]
    while stack:
        rec, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_CHAIN_DEPTH:
            stack += [(lineage, depth + 1) for lineage in _embedded(rec)]
    return deepest


def _too_deep(path: Path, record: Any) -> str | None:
    """Why ``record`` (read from ``path``) is refused before anything walks it, or None."""
    if isinstance(record, dict) and chain_depth(record) > MAX_CHAIN_DEPTH:
        return (
            f"{path}: not a lineage record ftc reads: its chain embeds more than {MAX_CHAIN_DEPTH} records (each"
            " training stage, export or reproduction adds one)\n    fix: ftc never extends a chain past that: treat"
            " this checkpoint as untrusted"
        )
    deepest, huge = _shape(record)
    if deepest > MAX_NESTING:
        return (
            f"{path}: not a lineage record: JSON nested more than {MAX_NESTING} levels deep (no record ftc writes"
            " comes close)"
        )
    if huge:
        return f"{path}: not a lineage record: it holds an integer beyond 64 bits (no count or step ftc records is)"
    return None


def too_long(folder: Path) -> str:
    """Why the checkpoint in ``folder``, whose chain is :data:`MAX_CHAIN_DEPTH` records long, cannot be a parent."""
    return (
        f"{folder}: its lineage chain already holds {MAX_CHAIN_DEPTH} records, the most ftc reads: a checkpoint made"
        " from it could not be verified\n    fix: start a new chain from its weights as plain base weights (a copy of"
        " the folder without lineage.json)"
    )


def read_record(folder: Path, *, sha256: str | None = None) -> dict[str, Any] | None:
    """The lineage record in ``folder``, or None when it has none. Raises ValueError for one that is not JSON, is
    nested deeper than :data:`MAX_NESTING`, holds a chain of more than :data:`MAX_CHAIN_DEPTH` records or an
    integer beyond 64 bits, or does not match lineage.schema.json: every reader of a record reads it here, so none
    walks a deeper one or formats such a number. ``sha256``: the digest its bytes were just pinned by (a record
    rewritten since raises ``ChangedSincePinned``)."""
    path = folder / LINEAGE_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        # a record embeds its parents' records: a long chain of large folders stays far below this
        text = read_pinned_text(path, sha256=sha256, limit=64 * MiB, what="lineage record")  # a regular file
        record = finite_json(text)
    except ChangedSincePinned:
        raise
    except RecursionError:  # the parser's own depth limit
        raise ValueError(
            f"{path}: not a lineage record: JSON nested too deeply to parse (no record ftc writes comes close)"
        ) from None
    except (NotReadable, ValueError) as exc:  # ValueError: not JSON, NaN
        raise ValueError(f"{path}: not a lineage record ({exc})") from None
    problem = _too_deep(path, record)
    if problem is not None:
        raise ValueError(problem)
    from ftc.spec.schemas import validator

    error = next(iter(validator("lineage.schema.json").iter_errors(record)), None)
    if error is not None:
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        raise ValueError(f"{path}: not a lineage record: {where}: {error.message[:200]}")
    return record


def environment(image: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ran: Python, the platform and the key package versions, a digest of the full list of installed
    distributions, and the container image when the run is in one (as the engine identified it at start)."""
    from importlib import metadata

    installed = sorted({(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}.items())
    versions = dict(installed)
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "packages": {name: versions.get(name) for name in KEY_PACKAGES},
        "packages_digest": digest_of([f"{name}=={version}" for name, version in installed if name]),
    }
    if image is not None:
        env["image"] = image
    return env


def location_of(path: Path, checkpoint: Path, given: str) -> str:
    """How a record names a local parent: relative to the checkpoint folder (symlinks such as ``best`` resolved),
    unless the user wrote an absolute path."""
    if given.startswith("~") or os.path.isabs(given):
        return given
    return Path(os.path.relpath(os.path.realpath(path), os.path.realpath(checkpoint))).as_posix()


def located(location: str, folder: Path) -> Path:
    """Where a record's ``location`` of a parent is on this machine: relative to ``folder`` (the checkpoint that
    names it), or absolute, or under this user's home (``~/…``). A record is outside input: ``~name`` stays as
    written (relative, so not found), never another user's home, and a home that cannot be told is not looked up."""
    path = Path(location)
    if location == "~" or location.startswith("~/"):
        try:
            path = path.expanduser()
        except RuntimeError:  # no home directory known
            pass
    return Path(os.path.normpath(path if path.is_absolute() else folder / path))


def checkpoint_parent(folder: Path, record: dict[str, Any], relation: str, child: Path, given: str) -> dict[str, Any]:
    """A checkpoint (in ``folder``, whose verified record is ``record``) as the parent of ``child`` (an export, a
    reproduction): its files with its record among them, the record embedded whole, located relative to the child,
    so `ftc lineage verify` walks from the child down the whole chain. A record already :data:`MAX_CHAIN_DEPTH`
    deep cannot have a child that ftc would read back: :class:`LineageBroken`."""
    if chain_depth(record) >= MAX_CHAIN_DEPTH:
        raise LineageBroken(too_long(folder))
    files = {f["path"]: f["sha256"] for f in record["checkpoint"]["files"]}
    with StatCache() as cache:  # read once per rerun, not once per checkpoint it writes
        files[LINEAGE_FILE], _ = hash_file(folder / LINEAGE_FILE, cache)
    return {
        "role": "checkpoint",
        "relation": relation,
        "source": {
            "source": "local",
            "kind": "dir",
            "given": given,
            "location": Path(os.path.relpath(os.path.realpath(folder), os.path.realpath(child))).as_posix(),
        },
        "digest": manifest_digest([FileDigest(p, 0, sha) for p, sha in sorted(files.items())]),
        "files": [{"path": p, "sha256": sha} for p, sha in sorted(files.items())],
        "record_id": record["record_id"],
        "lineage": record,
    }


def reproduction_of(folder: Path, record: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
    """For a checkpoint ``ftc reproduce`` wrote (in OUT/checkpoints/NAME): the original, as its parent entry, and the
    verdict in OUT/reproduction.json (None when it cannot be read). None for any other checkpoint."""
    origin = next((p for p in record.get("parents", []) if p.get("relation") == "reproduction-of"), None)
    if origin is None:
        return None
    try:
        text = read_bounded_text(folder.parent.parent / REPRODUCTION_FILE, limit=4 * MiB, what="reproduction report")
        verdict = finite_json(text)["verdict"]
    except (NotReadable, ValueError, KeyError, TypeError, RecursionError):
        return origin, None
    return origin, verdict if isinstance(verdict, str) else None
