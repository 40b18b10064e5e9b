"""How many CPU threads each process of a run (or ``ftc generate``/``eval``/``export``) computes with.

torch starts one thread per core it sees. With several processes on a node, or another process keeping cores busy,
that oversubscribes the cores, and torch's threads, which wait for each other at every operation, slow down many
times over (a 140-token prefill on a shared 2-core machine: 20-22 s with 2 threads, 2.4 s with one). So ftc chooses:
the cores this process may use (its CPU affinity, within a cgroup's CPU quota), less the cores other work keeps busy
(measured over ``SAMPLE_S``), divided among the node's processes, at least one each. ``OMP_NUM_THREADS``, when
set, decides instead. The choice is said in one line.

Only the standard library is imported here, torch when the choice is applied.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SAMPLE_S",
    "CpuThreads",
    "busy_cores",
    "choose_cpu_threads",
    "cpu_quota",
    "set_cpu_threads",
    "use_cpu_threads",
]

#: how long the other work on this process's cores is measured (one scheduler tick is 10 ms)
SAMPLE_S = 0.1


@dataclass(frozen=True)
class CpuThreads:
    """The threads each process computes with, and why (``line`` says both)."""

    threads: int
    why: str
    #: True when OMP_NUM_THREADS decided (it is then the setting the processes this one starts inherit)
    from_environment: bool = False

    def line(self) -> str:
        return f"CPU threads: {self.threads} per process ({self.why})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def _from_environment(environ: Mapping[str, str]) -> int | None:
    """OMP_NUM_THREADS as a thread count: its first level (``4`` or ``4,2``); None when unset, empty or not a count."""
    text = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup (v2) quota allows this process (a container's ``--cpus``), or None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _cpu_times(cpus: set[int]) -> tuple[int, int] | None:
    """Clock ticks (busy, all) of ``cpus`` so far, from /proc/stat; None where there is none (not Linux)."""
    busy = total = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                    total += sum(ticks)
                    busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    return busy, total


def busy_cores(cpus: set[int], seconds: float = SAMPLE_S) -> float:
    """How many of ``cpus`` other work keeps busy: their busy time over ``seconds``, less this process's own, in
    cores (0.0 where it cannot be measured)."""
    before, own_before, start = _cpu_times(cpus), os.times(), time.monotonic()
    time.sleep(seconds)
    after, own_after, wall = _cpu_times(cpus), os.times(), time.monotonic() - start
    if before is None or after is None or wall <= 0:
        return 0.0
    busy = (after[0] - before[0]) / os.sysconf("SC_CLK_TCK")
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    return max(0.0, (busy - own) / wall)


def choose_cpu_threads(
    processes_per_node: int,
    *,
    environ: Mapping[str, str] | None = None,
    cpus: set[int] | None = None,
    quota: float | None = None,
    busy: Callable[[set[int]], float] = busy_cores,
) -> CpuThreads:
    """The threads for each of ``processes_per_node`` processes: ``OMP_NUM_THREADS`` when set; else the cores of
    ``cpus`` (this process's affinity) that other work does not keep busy (a core counts once it is half busy: too
    few threads cost less than too many), capped by a cgroup's ``quota``, shared among the processes."""
    environ = os.environ if environ is None else environ
    given = _from_environment(environ)
    if given is not None:
        return CpuThreads(given, f"OMP_NUM_THREADS={given}", from_environment=True)
    cpus = os.sched_getaffinity(0) if cpus is None else cpus
    quota = cpu_quota() if quota is None else quota
    # busy is measured over the cores this process may run on (a container's: the host's); a quota caps what is
    # left of them, never less: an 8-core pod on a 64-core host with 40 busy still has its 8
    taken = min(len(cpus), int(busy(cpus) + 0.5))
    free = len(cpus) - taken
    limit = f"{len(cpus)} cores"
    cores = free
    if quota is not None and quota < free:
        cores = max(1, math.floor(quota))
        limit = f"{cores} cores by the CPU quota"
    processes = max(1, processes_per_node)
    threads = max(1, cores // processes)
    others = f", {taken} of them busy with other work" if taken else ""
    return CpuThreads(threads, f"{limit}{others}, {_plural(processes, 'process')} per node")


def set_cpu_threads(threads: int) -> None:
    """Make torch in this process compute with ``threads`` threads (intra-op, and inter-op where it has not
    started)."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # set once per process: an earlier run in this interpreter started its pool
        pass


def use_cpu_threads(processes_per_node: int, say: Callable[[str], None]) -> CpuThreads:
    """Choose this process's threads (``choose_cpu_threads``), apply them, and ``say`` the choice; for
    ``ftc generate``, ``eval`` and ``export`` (one process) and every rank of a run."""
    choice = choose_cpu_threads(processes_per_node)
    set_cpu_threads(choice.threads)
    say(choice.line())
    return choice
