"""What every recipe checks before it trains: the plan's inputs as found here, the lineage of its parents, and the
checkpoint to continue from. A launcher that has just checked them hands them over (``Checked``) instead."""

from __future__ import annotations

from dataclasses import dataclass

from ftc.images import image_from_env
from ftc.lineage.run import Lineage
from ftc.spec.plan import Plan

from .inputs import FoundInputs, verify_inputs
from .resume import ResumePoint, resume_point

__all__ = ["Checked", "check_run"]


@dataclass(frozen=True)
class Checked:
    """The inputs as found on this machine, the checkpoint to resume from (verified against its lineage record) with
    that record, and the parents' lineage."""

    paths: FoundInputs
    previous: ResumePoint | None
    lineage: Lineage


def check_run(plan: Plan, *, resume: bool, inputs_checked: bool = False) -> Checked:
    """Check ``plan``'s inputs against their pinned digests, its parents against their records (a parent must still
    be what its record says) and, with ``resume``, the newest checkpoint to continue (verified before anything of it
    is read). ``inputs_checked``: the launcher checked the fetched inputs against their stores and put them in the
    cache (a container run): they are read from there, without store credentials."""
    paths = verify_inputs(plan, checked_by_host=inputs_checked)
    lineage = Lineage.check(plan, paths, image=image_from_env())
    return Checked(paths, resume_point(plan.output_path, plan.plan_id, resume=resume), lineage)
