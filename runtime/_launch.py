"""``ftc run``: check the plan and its inputs, then start the plan's processes and wait for them.

One process runs in this interpreter; more are started with the plan's launch command (torch.distributed.run),
and their exit status comes back through a failure note each worker leaves in the output folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from ftc.errors import ExitCode, FtcError, TrainingFailed, UsageError, report
from ftc.spec.plan import Plan, read_plan

from ._inputs import verify_inputs

__all__ = ["FAILURE_NOTE", "raise_failure", "run_plan", "worker_main"]

FAILURE_NOTE = ".ftc-failure.json"


def run_plan(
    plan: Plan,
    plan_path: Path,
    *,
    resume: bool = False,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int | None = None,
):
    """Run ``plan`` (read from ``plan_path``) on this machine (node ``node_rank`` of a multi-node plan)."""
    paths = verify_inputs(plan)  # fail here, before any process starts, when an input changed
    launch = plan.launch
    if launch.nodes == 1 and launch.processes_per_node == 1:
        # one process: its own rendezvous on an ephemeral port (0: the OS picks one; nobody else connects)
        one = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
        for key, value in one.items():
            os.environ.setdefault(key, value)
        from .train import train

        return train(plan, resume=resume, paths=paths)
    if node_rank >= launch.nodes:
        raise UsageError(f"--node-rank {node_rank}: the plan has {launch.nodes} node(s), ranks 0 to {launch.nodes - 1}")
    where = {"node_rank": node_rank, "master_addr": master_addr, "master_port": master_port or 29500}
    return _launch_workers(plan, plan_path.resolve(), resume=resume, **where)


def _launch_workers(
    plan: Plan, plan_path: Path, *, resume: bool, node_rank: int, master_addr: str, master_port: int
) -> None:
    values = {
        "plan": str(plan_path),
        "node_rank": str(node_rank),
        "master_addr": master_addr,
        "master_port": str(master_port),
    }
    command = [sys.executable if part == "python" else part.format(**values) for part in plan.launch.command]
    if resume:
        command.append("--resume")
    note = plan.output_path / FAILURE_NOTE
    note.unlink(missing_ok=True)
    child = subprocess.Popen(command, start_new_session=True)
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


def raise_failure(code: int, note: Path) -> None:
    """Nothing when ``code`` is 0; else the error rank 0 left in ``note`` (already printed by it), or a generic one."""
    if code == 0:
        return
    if note.exists():
        failure = json.loads(note.read_text())
        error = FtcError(failure["message"])
        error.exit_code = ExitCode(failure["exit_code"])
        error.already_reported = True
        raise error
    raise TrainingFailed(f"a training process failed (exit status {code}); its output above says why")


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
    args = parser.parse_args(argv)
    plan = None
    try:
        plan = read_plan(args.plan)
        if "RANK" not in os.environ:  # started by hand (or as a container's entry point): this node's share
            where = {"node_rank": args.node_rank, "master_addr": args.master_addr, "master_port": args.master_port}
            run_plan(plan, args.plan, resume=args.resume, **where)
        else:
            from .train import train

            train(plan, resume=args.resume)
        return 0
    except (Exception, KeyboardInterrupt) as exc:
        code = report(exc)
        if isinstance(exc, FtcError) and int(os.environ.get("RANK", "0")) == 0 and plan is not None:
            _leave_note(plan.output_path / FAILURE_NOTE, exc)
        return int(code)


def _leave_note(note: Path, exc: FtcError) -> None:
    """Rank 0's error for the launcher, which reports it with its exit code (rank 0 printed it already)."""
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(json.dumps({"exit_code": int(exc.exit_code), "message": str(exc)}))
