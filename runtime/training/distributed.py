"""This process's place in the run: its rank, the world, its device, and the collectives the recipe uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ftc.errors import UsageError

from .progress import log
from .threads import choose_cpu_threads, set_cpu_threads

__all__ = ["Dist", "end_distributed", "init_distributed"]


@dataclass(frozen=True)
class Dist:
    """Rank, world and device of this process (one code path for one process or many, CPU or GPU)."""

    rank: int
    local_rank: int
    world: int
    device: Any

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.world > 1 or dist.is_initialized():  # one process without a group has no one to wait for
            dist.barrier()

    def describe_device(self) -> str:
        """This process's device in words (the lineage record's): ``cuda (its name)``, or ``cpu``."""
        if self.device.type != "cuda":
            return self.device.type
        import torch

        return f"cuda ({torch.cuda.get_device_name(self.device)})"

    def sum(self, *values: float) -> list[float]:
        import torch
        import torch.distributed as dist

        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()


def init_distributed(world_size: int) -> Dist:
    """Join the run's process group (gloo on CPU, NCCL on GPUs) as the rank the launcher gave this process, its CPU
    threads chosen first (``threads``: every backend's ranks start here)."""
    # the node's processes, as torch.distributed.run and Ray Train tell each (1: a process started alone)
    threads = choose_cpu_threads(int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    import deepspeed
    import torch

    set_cpu_threads(threads.threads)

    cuda = torch.cuda.is_available()
    if not cuda:
        # DeepSpeed's CPU comm backend compiles its shared-memory all-reduce op when it starts (a C++ toolchain and
        # ninja at run time; tens of seconds on a fresh machine), but only inference_all_reduce uses that op:
        # training's collectives go through torch.distributed (gloo). Marking it unavailable skips the build.
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ["WORLD_SIZE"])
    if world != world_size:
        raise UsageError(f"the plan is for {world_size} processes but {world} started; launch it with `ftc run`")
    # ftc's launcher said the choice it gave torch.distributed.run's processes in OMP_NUM_THREADS
    if rank == 0 and not (threads.from_environment and "TORCHELASTIC_RUN_ID" in os.environ):
        log(threads.line())
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank, local_rank, world, device)


def end_distributed() -> None:
    """End this process's process group, if it has one, when the process leaves after its run (every rank gets
    here together after the last checkpoint): a collective's threads alive at exit can abort the process. Not for an
    interpreter that runs again: DeepSpeed keeps the groups it made of this one, which a later run would use."""
    import sys

    if "torch" not in sys.modules:  # nothing started one
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
