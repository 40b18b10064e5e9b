"""What `ftc run --backend ray` adds to a run: the quickstart, `ftc run` local against `--backend ray` on a one-node
Ray cluster started here (the tests' cluster: `ray start --head --block` with a token of its own, stopped by its own
process ids at the end), one after the other, each a new process, the wall time of each whole command (compile
excluded). Needs `pip install 'ftc[ray]'`.

    python bench/ray_overhead.py [--repeats N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))  # the tests' cluster: tests/support/ray_cluster.py
    from support.ray_cluster import start_ray_cluster

    ftc = [sys.executable, "-m", "ftc.cli"]
    scratch = Path(tempfile.mkdtemp(prefix="ftc-ray-bench-"))
    # one node with every core, a token of its own, stopped by its own process ids (never `ray stop`)
    cluster = start_ray_cluster(scratch / "cluster", nodes=1)
    times: dict[str, list[float]] = {"local": [], "ray": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for i in range(args.repeats):
                for backend in ("local", "ray"):
                    work = root / f"{backend}-{i}"
                    shutil.copytree(REPO / "examples" / "quickstart", work)
                    spec = work / "job.yaml"
                    spec.write_text(spec.read_text().replace("output_dir: ../../runs/quickstart", "output_dir: run"))
                    subprocess.run([*ftc, "compile", spec, "-o", work / "plan.json"], check=True, capture_output=True)
                    extra = ["--backend", "ray", "--address", cluster.address] if backend == "ray" else []
                    command = [*ftc, "run", str(work / "plan.json"), *extra]
                    times[backend].append(_timed(command, work, cluster.environ()))
                    print(f"{backend} run {i + 1}: {times[backend][-1]:.1f} s", file=sys.stderr, flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    local, on_ray = statistics.median(times["local"]), statistics.median(times["ray"])
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        "what": "ftc run of the quickstart (1 process): wall time of the whole command, median",
        "seconds": times,
        "ratio_ray_to_local": on_ray / local,
        "added_s": on_ray - local,
    }
    print(f"quickstart: ray / local = {on_ray / local:.2f} (median of {args.repeats}; +{on_ray - local:.1f} s here)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
