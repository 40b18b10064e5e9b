"""Checks of a parent checkpoint against its own lineage record when a spec continues from it: a local one's files
as hashed for the plan, one an ftc run published to a store by the marker its upload ends with. Each appends
:class:`~ftc.errors.Problem` s to the loaded spec (so every problem is reported at once)."""

from __future__ import annotations

from ftc.lineage.record import LINEAGE_FILE, SIGNATURE_FILE, read_record
from ftc.lineage.verify import files_problems, record_problems
from ftc.spec import LoadedSpec
from ftc.spec.reading import ChangedSincePinned
from ftc.stores.sources import SOURCES, ResolvedInput

__all__ = ["check_parent_lineage"]


def check_parent_lineage(loaded: LoadedSpec, at: tuple, item: ResolvedInput) -> None:
    """A local parent checkpoint that carries a lineage record must still be what the record says: its files (as
    just hashed for the plan) and its record's id. What changed is a problem with exit 12, as at run time."""
    kind = SOURCES[item.source]
    if kind.store_pins and item.kind == "dir":
        return _check_published(loaded, at, item)  # its files are checked against the record when a run downloads it
    if not kind.on_disk or item.kind != "dir" or item.local_path is None:
        return
    try:  # the record as the folder's manifest just pinned it (a record swapped in since would decide the check)
        record = read_record(item.local_path, sha256=item.entry.file_sha256.get(LINEAGE_FILE))
    except ChangedSincePinned as exc:
        loaded.problems.append(loaded.problem(at, str(exc), exc.fix, kind="changed"))
        return
    except ValueError as exc:
        loaded.problems.append(loaded.problem(at, str(exc), "continue from a checkpoint ftc wrote", kind="lineage"))
        return
    if record is None:
        return
    where = str(item.local_path)
    # its record and its signature (written after the record, over it) are not among the files the record names
    files = {path: sha for path, sha in item.entry.file_sha256.items() if path not in (LINEAGE_FILE, SIGNATURE_FILE)}
    for problem in record_problems(record, where) + files_problems(record["checkpoint"]["files"], files, where):
        loaded.problems.append(
            loaded.problem(
                at,
                f"the parent checkpoint no longer matches its own lineage record: {problem}",
                "continue from an intact checkpoint (`ftc lineage verify` names what changed)",
                kind="lineage",
            )
        )


def _check_published(loaded: LoadedSpec, at: tuple, item: ResolvedInput) -> None:
    """A checkpoint an ftc run published to a store (``…/checkpoints/step-N/``) is read only once its upload is
    whole: its marker is there, names exactly the files listed, and the record_id of the lineage record there."""
    from ftc.stores.publish import marker_problems, published_layout, read_marker
    from ftc.stores.remote import RemoteProblem, store_for

    uri = item.entry.uri.rstrip("/") + "/"
    if not published_layout(uri):
        return
    fix = (
        "continue from a checkpoint whose upload finished"
        " (`ftc run PLAN --resume` of the run that wrote it uploads the rest)"
    )
    try:
        marker = read_marker(store_for(uri), uri)
    except RemoteProblem as exc:
        loaded.problems.append(loaded.problem(at, str(exc), exc.hint, kind="input"))
        return
    problems = marker_problems(uri, marker, {f.path: f.size for f in item.entry.files or ()})
    if not problems and item.local_path is not None and (item.local_path / LINEAGE_FILE).exists():
        record = read_record(item.local_path)
        if record is not None and record.get("record_id") != marker["record_id"]:
            problems.append(
                f"{uri}{LINEAGE_FILE}: record {record.get('record_id')}, the marker names {marker['record_id']}"
            )
    for problem in problems:
        loaded.problems.append(loaded.problem(at, problem, fix, kind="input"))
