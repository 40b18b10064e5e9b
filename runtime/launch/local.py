"""``ftc run``: check the plan and its inputs, then start the plan's processes and wait for them.

One process runs in this interpreter; more are started with the plan's launch command (torch.distributed.run),
and their exit status comes back through a failure note each worker leaves in the output folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ftc.errors import ExitCode, FtcError, TrainingFailed, UsageError, report
from ftc.images import image_from_env
from ftc.lineage.run import Lineage
from ftc.runtime.training.checkpoint import is_complete, resume_point
from ftc.runtime.training.inputs import CHECKED_BY_HOST_ENV, verify_inputs
from ftc.runtime.training.progress import log
from ftc.runtime.training.trackers import OFF_ENV, check_tracker
from ftc.spec.plan import Placement, Plan, read_plan

from .lock import output_lock
from .publish import publishing

__all__ = ["Rendezvous", "raise_failure", "run_plan", "worker_main"]

#: where rank 0 leaves its exit code for the launcher (a file in a folder the launcher made for this run)
FAILURE_NOTE_ENV = "FTC_FAILURE_NOTE"


@dataclass(frozen=True)
class Rendezvous:
    """This machine's place in a multi-node plan: its node rank and where node 0 waits for the others (a one-node
    plan ignores it)."""

    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def args(self) -> list[str]:
        """The same, as ``python -m ftc.runtime`` options."""
        return [
            "--node-rank",
            str(self.node_rank),
            "--master-addr",
            self.master_addr,
            "--master-port",
            str(self.master_port),
        ]


def run_plan(plan: Plan, plan_path: Path, *, resume: bool = False, rendezvous: Rendezvous = Rendezvous()):
    """Run ``plan`` (read from ``plan_path``) on this machine: all of it, or node ``rendezvous.node_rank``'s share."""
    # before any process starts (and DeepSpeed with it): an input changed, a checkpoint that must not be overwritten
    # or cannot be resumed, a run already complete
    launch = plan.launch
    if rendezvous.node_rank >= launch.nodes:
        raise UsageError(
            f"--node-rank {rendezvous.node_rank}: the plan has {launch.nodes} node(s), ranks 0 to {launch.nodes - 1}"
        )
    paths = verify_inputs(plan)
    lineage = Lineage.check(plan, paths, image=image_from_env())  # a parent must still be what its record says
    # an output_dir in a store: node 0 uploads each checkpoint (in a container, the host that started it does)
    publishes = rendezvous.node_rank == 0 and os.environ.get(CHECKED_BY_HOST_ENV) != plan.plan_id
    with publishing(plan, resume=resume) if publishes else contextlib.nullcontext():
        previous = resume_point(plan.output_path, plan.plan_id, resume=resume)
        if previous is not None and is_complete(previous[0]):
            log(f"{previous[0]} is the last checkpoint of this plan: the run is complete; nothing to resume")
            return None
        if resume and previous is None:
            log(f"--resume: {plan.output_path} holds no checkpoint of this plan yet; starting from the beginning")
        if rendezvous.node_rank == 0 and not check_tracker(plan):  # process 0 is on node 0: it alone logs
            os.environ[OFF_ENV] = plan.plan_id  # for this run's processes (removed when it ends)
        try:
            return _run_locked(plan, plan_path, paths, lineage, previous, resume=resume, rendezvous=rendezvous)
        finally:
            os.environ.pop(OFF_ENV, None)


def _run_locked(
    plan: Plan,
    plan_path: Path,
    paths: dict[str, Path | str],
    lineage: Lineage,
    previous: tuple[Path, dict] | None,
    *,
    resume: bool,
    rendezvous: Rendezvous,
):
    """The run itself, holding the output folder's lock: in this process, or as the plan's worker processes."""
    launch = plan.launch
    with output_lock(plan.output_path, node_rank=rendezvous.node_rank, plan_id=plan.plan_id):
        if launch.nodes == 1 and launch.processes_per_node == 1:
            # one process: its own rendezvous on an ephemeral port (0: the OS picks one; nobody else connects)
            one = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
            for key, value in one.items():
                os.environ.setdefault(key, value)
            from ftc.runtime.recipes.sft import Checked, train

            return train(plan, resume=resume, checked=Checked(paths, previous, lineage))
        return _launch_workers(plan, plan_path.resolve(), resume=resume, rendezvous=rendezvous)


def _launch_workers(plan: Plan, plan_path: Path, *, resume: bool, rendezvous: Rendezvous) -> None:
    values = {
        "plan": str(plan_path),
        "node_rank": str(rendezvous.node_rank),
        "master_addr": rendezvous.master_addr,
        "master_port": str(rendezvous.master_port),
    }
    command = [sys.executable if part == "python" else part.format(**values) for part in plan.launch.command]
    if resume:
        command.append("--resume")
    # the note lives outside the output folder: the failure to report may be that the output storage is full
    with tempfile.TemporaryDirectory(prefix="ftc-run-") as scratch:
        note = Path(scratch) / "failure.json"
        if plan.placement is not None:  # the workers run the same plan file, placed as this process places it
            placement = Path(scratch) / "placement.json"
            placement.write_text(json.dumps(plan.placement.to_dict()))
            command += ["--placement", str(placement)]
        child = subprocess.Popen(command, start_new_session=True, env={**os.environ, FAILURE_NOTE_ENV: str(note)})
        try:
            code = child.wait()
        except KeyboardInterrupt:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait()
            raise
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
        raise_failure(code, note)


def raise_failure(code: int, note: Path | None = None) -> None:
    """Nothing when ``code`` is 0; else the error rank 0 left in ``note`` or that ``code`` names (already printed by
    the process that failed), or a generic one for a process that ended without saying why."""
    if code == 0:
        return
    exit_code = None
    if note is not None and note.is_file():
        try:
            exit_code = ExitCode(json.loads(note.read_bytes()[:4096])["exit_code"])
        except (ValueError, KeyError, TypeError):
            pass
    if exit_code is None and code in _OWN_CODES:  # a process of ftc's that reported its error itself
        exit_code = ExitCode(code)
    if exit_code is None:
        raise TrainingFailed(f"a training process failed (exit status {code}); its output above says why")
    error = FtcError(f"a training process failed ({exit_code.name.lower()}); its output above says why")
    error.exit_code = exit_code
    error.already_reported = True
    raise error


#: exit codes ftc gives after reporting an error itself (1 is also Python's for a crash: not among them)
_OWN_CODES = {int(c) for c in ExitCode if c not in (ExitCode.OK, ExitCode.INTERNAL)}


def worker_main(argv: list[str] | None = None) -> int:
    """``python -m ftc.runtime PLAN [--resume]``: one rank of a plan (what the launch command starts)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ftc.runtime", description="Run one process of a compiled ftc plan."
    )
    parser.add_argument("plan", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master-addr", default="127.0.0.1")
    parser.add_argument("--master-port", type=int, default=29500)
    parser.add_argument("--placement", type=Path, help=argparse.SUPPRESS)  # ftc reproduce's workers
    args = parser.parse_args(argv)
    plan = None
    try:
        plan = read_plan(args.plan)
        if args.placement is not None:
            plan = dataclasses.replace(plan, placement=_read_placement(args.placement))
        if "RANK" not in os.environ:  # started by hand (or as a container's entry point): this node's share
            rendezvous = Rendezvous(args.node_rank, args.master_addr, args.master_port)
            run_plan(plan, args.plan, resume=args.resume, rendezvous=rendezvous)
        else:
            from ftc.runtime.recipes.sft import train

            train(plan, resume=args.resume)
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        code = report(exc)
        note = os.environ.get(FAILURE_NOTE_ENV)
        if isinstance(exc, FtcError) and int(os.environ.get("RANK", "0")) == 0 and note:
            _leave_note(Path(note), exc)
        return int(code)


def _read_placement(path: Path) -> Placement:
    """The placement the launcher wrote for this run's workers (small JSON in its own scratch folder)."""
    try:
        with open(path, "rb") as f:
            return Placement.from_dict(json.loads(f.read(1 << 20)))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--placement {path}: {exc}") from None


def _leave_note(note: Path, exc: FtcError) -> None:
    """Rank 0's exit code for the launcher (torch.distributed.run exits 1 whatever its workers' codes were)."""
    try:
        note.write_text(json.dumps({"exit_code": int(exc.exit_code)}))
    except OSError:
        pass  # the launcher reports a failed process, and rank 0 said why
