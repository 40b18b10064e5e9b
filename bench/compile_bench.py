"""Benchmark `ftc compile`: cold start, recompile against 1 GB of unchanged inputs, hashing vs sha256sum.

    python bench/compile_bench.py [--size-mb 1024] [--repeat 5]

Prints a table and writes JSON (--json PATH). Everything runs in a temporary folder with its own ftc cache.
Page cache is warm for both ftc and sha256sum (each file is read once before timing).
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
QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"


def _ftc() -> list[str]:
    return [sys.executable, "-m", "ftc.cli"]


def _wall(cmd: list[str], env: dict, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _age(path: Path) -> None:
    past = time.time() - 60
    for p in [path, *path.rglob("*")]:
        os.utime(p, (past, past))


def make_big_job(root: Path, size_mb: int, shards: int = 4) -> Path:
    """A spec whose base weights are ``size_mb`` MB of safetensors-named shards (content is not parsed at compile)."""
    model = root / "model"
    model.mkdir(parents=True)
    shutil.copy(REPO / "examples" / "quickstart" / "model" / "config.json", model / "config.json")
    chunk = os.urandom(1 << 20)
    for i in range(shards):
        with open(model / f"model-{i + 1:05d}-of-{shards:05d}.safetensors", "wb") as f:
            for _ in range(size_mb // shards):
                f.write(chunk)
    shutil.copytree(REPO / "examples" / "quickstart" / "data", root / "data")
    spec = root / "job.yaml"
    spec.write_text(
        "model_id: bench/tiny\ninitial_base_model_ckpt_path: model\ntrain_path: data/train.jsonl\n"
        "valid_path: data/valid.jsonl\ncontext_length: 64\nlora_config: {r: 8}\n"
    )
    _age(root)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # bytecode as an installed package has it (pip compiles at install); PYTHONDONTWRITEBYTECODE would make
        # every process recompile ftc's sources and measure that instead
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        _wall([*_ftc(), "--help"], env)

        # 1. cold compile of the quickstart: new process, empty cache every time
        cold = []
        for i in range(args.repeat):
            env["FTC_CACHE_DIR"] = str(tmp / f"cold-cache-{i}")
            cold.append(_wall([*_ftc(), "compile", str(QUICKSTART), "-o", str(tmp / "q.json")], env))
        results["quickstart_cold_compile_s"] = statistics.median(cold)

        # 2. hashing 1 GB: ftc's first compile vs sha256sum over the same files (page cache warm for both)
        spec = make_big_job(tmp / "big", args.size_mb)
        files = sorted(str(p) for p in (tmp / "big" / "model").iterdir())
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)
        sha = min(_wall(["sha256sum", *files], env) for _ in range(3))
        first = []
        for i in range(3):
            env["FTC_CACHE_DIR"] = str(tmp / f"hash-cache-{i}")
            first.append(_wall([*_ftc(), "compile", str(spec), "-o", str(tmp / "big.json")], env))
        first_s = min(first)
        mb = args.size_mb
        results["inputs_mb"] = mb
        results["sha256sum_mb_per_s"] = mb / sha
        results["ftc_first_compile_mb_per_s"] = mb / first_s
        results["hash_throughput_ratio_vs_sha256sum"] = sha / first_s

        # 3. recompile, inputs unchanged: the stat cache answers (CLI process, and the library call in-process)
        recompile = [
            _wall([*_ftc(), "compile", str(spec), "-o", str(tmp / "big.json")], env) for _ in range(args.repeat)
        ]
        results["recompile_1gb_cli_s"] = statistics.median(recompile)
        os.environ["FTC_CACHE_DIR"] = env["FTC_CACHE_DIR"]
        from ftc.compiler import compile_spec

        compile_spec(spec, plan_dir=tmp)  # imports warm
        inproc = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = compile_spec(spec, plan_dir=tmp)
            inproc.append(time.perf_counter() - start)
        assert result.cache_misses == 0, "recompile re-hashed inputs"
        results["recompile_1gb_in_process_s"] = statistics.median(inproc)
        python_start = statistics.median(_wall([sys.executable, "-c", "pass"], env) for _ in range(args.repeat))
        results["python_startup_s"] = python_start
        floor = [
            _wall([sys.executable, "-c", "import click, yaml, pathlib, json, sqlite3"], env) for _ in range(args.repeat)
        ]
        results["cli_import_floor_s"] = statistics.median(floor)

    rows = [
        (
            "cold `ftc compile` of the quickstart (new process, empty cache)",
            f"{results['quickstart_cold_compile_s']:.3f} s",
            "goal < 0.5 s",
        ),
        (f"first compile of {mb} MB: hashing throughput", f"{results['ftc_first_compile_mb_per_s']:.0f} MB/s", ""),
        ("sha256sum on the same files", f"{results['sha256sum_mb_per_s']:.0f} MB/s", ""),
        ("ratio ftc / sha256sum", f"{results['hash_throughput_ratio_vs_sha256sum']:.2f}", "goal >= 0.8"),
        (f"recompile, {mb} MB unchanged: `ftc compile` process", f"{results['recompile_1gb_cli_s']:.3f} s", ""),
        (
            f"recompile, {mb} MB unchanged: compile_spec() in-process",
            f"{results['recompile_1gb_in_process_s']:.4f} s",
            "goal < 0.1 s",
        ),
        ("python interpreter start-up alone", f"{results['python_startup_s']:.3f} s", ""),
        ("python + the CLI's libraries (click, yaml, json, sqlite3)", f"{results['cli_import_floor_s']:.3f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"machine: {results['machine']}, Python {results['python']}")
    for name, value, goal in rows:
        print(f"{name:<{width}}  {value:>10}  {goal}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
