"""A plan document's form, short of checking it: its version, its canonical text, the ``plan_id`` that seals it, the
one launch command ftc writes into it, and the output folders that name an object store. What ``ftc compile`` uses
to write a plan and ``plan_checks`` uses to tell whether a plan is one it could have written."""

from __future__ import annotations

import json
from typing import Any

from .canonical import digest_of

__all__ = ["PLAN_VERSION", "STORE_SCHEMES", "launch_command", "plan_text", "seal_plan"]

PLAN_VERSION = 2
#: output_dir values that name an object-store prefix rather than a folder
STORE_SCHEMES = ("s3://", "gs://")


def seal_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """``plan`` with ``plan_id`` set to the sha256 of its canonical JSON (without plan_id)."""
    body = {k: v for k, v in plan.items() if k != "plan_id"}
    return {**body, "plan_id": digest_of(body)}


def plan_text(plan: dict[str, Any]) -> str:
    """The file form of a plan: sorted keys, two-space indent, trailing newline. Deterministic."""
    return json.dumps(plan, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def launch_command(nodes: int, per_node: int) -> list[str]:
    """argv that starts one node's share of the job ({placeholders} are filled in by ``ftc run``). The only command
    ftc writes, and the only one it runs: a plan naming another is refused."""
    entry = ["-m", "ftc.runtime", "{plan}"]
    if nodes == 1 and per_node == 1:
        return ["python", *entry]
    if nodes == 1:
        return ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={per_node}", *entry]
    return [
        "python",
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={per_node}",
        "--node-rank={node_rank}",
        "--master-addr={master_addr}",
        "--master-port={master_port}",
        *entry,
    ]
