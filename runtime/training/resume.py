"""Where a run continues from: the newest checkpoint of its output folder, verified against its lineage record
before anything of it is read, and looked at again once its state is read (``ResumePoint.check_unchanged``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from ftc.errors import LineageBroken, UsageError
from ftc.lineage.verify import verified_record
from ftc.stores.stamps import ReadRecord

from .checkpoint import latest_checkpoint

__all__ = ["ResumePoint", "resume_point"]


class ResumePoint(NamedTuple):
    """A checkpoint to continue from: its folder, its lineage record (verified) and each of its files as it was
    when hashed (:meth:`check_unchanged` once they are read)."""

    folder: Path
    record: dict[str, Any]
    read: ReadRecord

    def check_unchanged(self) -> None:
        """Raise :class:`LineageBroken` naming each file changed (written, replaced, removed or added) since it was
        verified: what was read of it may not be what the record says."""
        changed = self.read.changed()
        if changed:
            raise LineageBroken(
                f"{self.folder}: changed while this run resumed from it, after it was verified against its lineage "
                "record (a file written, replaced, removed or added): what was read may not be what the record says:\n"
                + "\n".join(f"    {path}" for path in changed)
                + "\n    fix: resume again once nothing writes the checkpoint"
            )


def resume_point(out: Path, plan_id: str, *, resume: bool) -> ResumePoint | None:
    """The checkpoint a run into ``out`` continues from, with its verified lineage record; None: from the start.

    Without ``resume`` an output folder that holds checkpoints is refused. With it, the newest checkpoint must be
    exactly what its lineage record says (every file re-hashed, the record's id recomputed) and written by this plan;
    otherwise the run stops (it never falls back to an older checkpoint or to the start by itself)."""
    previous = latest_checkpoint(out)
    if previous is None:
        return None
    if not resume:
        raise UsageError(
            f"{out} already holds checkpoints ({previous.name}); resume with `ftc run PLAN --resume`, "
            "or choose another output_dir"
        )
    read = ReadRecord()
    record = verified_record(
        previous,
        "cannot resume from it: the checkpoint is not what its lineage record says",
        "restore the checkpoint, or move it aside to resume from the one before it",
        read=read,
    )
    if record["plan"]["plan_id"] != plan_id:
        raise UsageError(
            f"{previous} was written by another plan ({record['plan']['plan_id']}); it cannot be resumed with {plan_id}"
        )
    return ResumePoint(previous, record, read)
