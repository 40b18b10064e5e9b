"""Processes that keep cores busy beside a benchmark, as other users' jobs would: for bench/cpu_threads.py and
bench/stress_shutdown.py (``from _busy import spin, stop``: a script's own folder is on its path)."""

from __future__ import annotations

import subprocess
import sys


def spin(count: int) -> list[subprocess.Popen]:
    """``count`` processes that keep one core busy each until stopped (each in its own session: nothing of ftc's)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(count)]


def stop(spinners: list[subprocess.Popen]) -> None:
    for proc in spinners:
        proc.kill()
        proc.wait()
