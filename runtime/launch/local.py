"""``ftc run``: check the plan and its inputs, then start the plan's processes and wait for them.

One process runs in this interpreter; more are started with the plan's launch command (torch.distributed.run),
told what they need by command-line options (``handoff``), and report how they ended in an outcome note
(``outcome``) in a folder this process made for the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ftc.errors import FtcError, UsageError, report
from ftc.images import image_from_env
from ftc.lineage.run import Lineage
from ftc.runtime.training.checkpoint import is_complete
from ftc.runtime.training.distributed import end_distributed
from ftc.runtime.training.inputs import FoundInputs, verify_inputs
from ftc.runtime.training.progress import log
from ftc.runtime.training.resume import ResumePoint, resume_point
from ftc.runtime.training.threads import choose_cpu_threads
from ftc.runtime.training.trackers import check_tracker
from ftc.spec.plan import Placement, Plan, read_plan
from ftc.stores.scratch import scratch

from .handoff import Handoff, Rendezvous, worker_parser
from .lock import output_lock
from .outcome import finished_before, raise_unless_finished, write_outcome
from .publish import publishing

__all__ = ["run_plan", "worker_main"]


def run_plan(
    plan: Plan,
    plan_path: Path,
    *,
    resume: bool = False,
    rendezvous: Rendezvous | None = None,
    handoff: Handoff | None = None,
):
    """Run ``plan`` (read from ``plan_path``) on this machine: all of it, or node ``rendezvous.node_rank``'s share.
    ``handoff``: what the launcher that started this process said (in a container: the docker backend)."""
    rendezvous, handoff = rendezvous or Rendezvous(), handoff or Handoff()
    # before any process starts (and DeepSpeed with it): an input changed, a checkpoint that must not be overwritten
    # or cannot be resumed, a run already complete
    launch = plan.launch
    if rendezvous.node_rank >= launch.nodes:
        raise UsageError(
            f"--node-rank {rendezvous.node_rank}: the plan has {launch.nodes} node(s), ranks 0 to {launch.nodes - 1}"
        )
    paths = verify_inputs(plan, checked_by_host=handoff.inputs_checked)
    lineage = Lineage.check(plan, paths, image=image_from_env())  # a parent must still be what its record says
    # an output_dir in a store: node 0 uploads each checkpoint (in a container, the host that started it does)
    publishes = rendezvous.node_rank == 0 and not handoff.inputs_checked
    with publishing(plan, resume=resume) if publishes else contextlib.nullcontext():
        previous = resume_point(plan.output_path, plan.plan_id, resume=resume)
        if previous is not None and is_complete(previous.folder):
            log(f"{previous.folder} is the last checkpoint of this plan: the run is complete; nothing to resume")
            return None
        if resume and previous is None:
            log(f"--resume: {plan.output_path} holds no checkpoint of this plan yet; starting from the beginning")
        # process 0 is on node 0: it alone logs, and trains without the tracker when it is unreachable
        tracker_off = handoff.tracker_off or (rendezvous.node_rank == 0 and not check_tracker(plan))
        handoff = dataclasses.replace(handoff, resume=resume, tracker_off=tracker_off)
        with output_lock(
            plan.output_path, node_rank=rendezvous.node_rank, plan_id=plan.plan_id, container=handoff.container
        ):
            if launch.nodes == 1 and launch.processes_per_node == 1:
                return _run_here(plan, paths, lineage, previous, handoff)
            return _launch_workers(plan, plan_path.resolve(), handoff, rendezvous)


def _run_here(plan: Plan, paths: FoundInputs, lineage: Lineage, previous: ResumePoint | None, handoff: Handoff):
    """The plan's one process, in this interpreter, holding the output folder's lock."""
    # its own rendezvous on an ephemeral port (0: the OS picks one; nobody else connects)
    one = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
    for key, value in one.items():
        os.environ.setdefault(key, value)
    from ftc.runtime.recipes import recipe_for
    from ftc.runtime.training.preflight import Checked

    checked = Checked(paths, previous, lineage)
    train = recipe_for(plan.spec.task)
    # its process group of one stays for a later run in this interpreter: DeepSpeed keeps the groups it made of it
    try:
        return train(plan, resume=handoff.resume, checked=checked, tracker=not handoff.tracker_off)
    except FtcError as exc:
        if not finished_before(exc, plan.output_path, plan.plan_id, say=log):
            raise
        return None


def _launch_workers(plan: Plan, plan_path: Path, handoff: Handoff, rendezvous: Rendezvous) -> None:
    """The plan's processes, started with its launch command; their outcome, as this process's."""
    values = {
        "plan": str(plan_path),
        "node_rank": str(rendezvous.node_rank),
        "master_addr": rendezvous.master_addr,
        "master_port": str(rendezvous.master_port),
    }
    command = [sys.executable if part == "python" else part.format(**values) for part in plan.launch.command]
    # the note lives outside the output folder: the failure to report may be that the output storage is full
    with scratch("run") as folder:
        note = folder / "outcome.json"
        handoff = dataclasses.replace(handoff, outcome=note)
        if plan.placement is not None:  # the workers run the same plan file, placed as this process places it
            placement = folder / "placement.json"
            placement.write_text(json.dumps(plan.placement.to_dict()))
            handoff = dataclasses.replace(handoff, placement=placement)
        # torch.distributed.run gives each process OMP_NUM_THREADS=1 unless it is set: it is, to ftc's choice
        threads = choose_cpu_threads(plan.launch.processes_per_node)
        log(threads.line())
        env = os.environ if threads.from_environment else {**os.environ, "OMP_NUM_THREADS": str(threads.threads)}
        child = subprocess.Popen(command + handoff.to_args(), start_new_session=True, env=env)
        try:
            code = child.wait()
        except KeyboardInterrupt:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
        raise_unless_finished(code, note, plan.output_path, plan.plan_id, say=log)


def worker_main(argv: list[str] | None = None) -> int:
    """``python -m ftc.runtime PLAN [--resume]``: one rank of a plan (what the launch command starts), or, started by
    hand or as a container's entry point, this node's share of it."""
    args = worker_parser().parse_args(argv)
    handoff = Handoff.from_args(args)
    try:
        plan = read_plan(args.plan)
        if handoff.placement is not None:
            plan = dataclasses.replace(plan, placement=_read_placement(handoff.placement))
        if "RANK" not in os.environ:  # started by hand (or as a container's entry point): this node's share
            run_plan(plan, args.plan, resume=handoff.resume, rendezvous=Rendezvous.from_args(args), handoff=handoff)
        else:
            from ftc.runtime.recipes import recipe_for

            recipe_for(plan.spec.task)(
                plan, resume=handoff.resume, tracker=not handoff.tracker_off, inputs_checked=handoff.inputs_checked
            )
            # every rank gets here together, after the last checkpoint: the group ends before the process does
            end_distributed()
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        code = report(exc)
        # rank 0's error for the launcher (torch.distributed.run exits 1 whatever its workers' codes were)
        if isinstance(exc, FtcError) and handoff.outcome is not None and int(os.environ.get("RANK", "0")) == 0:
            write_outcome(handoff.outcome, exc)
        return int(code)


def _read_placement(path: Path) -> Placement:
    """The placement the launcher wrote for this run's workers (small JSON in its own scratch folder)."""
    try:
        with open(path, "rb") as f:
            return Placement.from_dict(json.loads(f.read(1 << 20)))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--placement {path}: {exc}") from None
