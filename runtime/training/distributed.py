"""This process's place in the run: its rank, the world, its device, and the collectives the recipe uses."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ftc.errors import UsageError

__all__ = ["Dist", "init_distributed"]


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
    import deepspeed
    import torch

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
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return Dist(rank, local_rank, world, device)
