"""What a Ray run shows (ftc.runtime.launch.ray_output), without a cluster: the rank-0 worker's forwarding of its
output line by line, the driver showing what comes through the queue, and the log file Ray's own output goes to.
A standard-library queue stands in for Ray's (``ray.util.queue.Queue`` has the same put/get and the same Empty);
the Ray run end to end is tests/integration/test_ray.py."""

from __future__ import annotations

import io
import os
import queue
import sys

from ftc.runtime.launch.ray_output import descriptors_logged_to, forwarding, logged_to, shown


def _sent(q: queue.Queue) -> list[tuple[str, str]]:
    found = []
    while not q.empty():
        found.append(q.get_nowait())
    return found


def test_the_rank_0_worker_forwards_each_whole_line_once_and_keeps_writing_its_own_streams(capfd):
    q: queue.Queue = queue.Queue()
    with forwarding(q):
        print("[ftc] step 1/4 loss 6.16", file=sys.stderr)
        sys.stderr.write("[ftc] step 2/4 ")
        sys.stderr.write("loss 6.19\n[ftc] no newline at the end")
        print("on stdout")
    assert _sent(q) == [
        ("err", "[ftc] step 1/4 loss 6.16\n"),
        ("err", "[ftc] step 2/4 loss 6.19\n"),
        ("out", "on stdout\n"),
        ("err", "[ftc] no newline at the end\n"),  # what is left of the last line, when the forwarding ends
    ]
    written = capfd.readouterr()
    assert "[ftc] step 1/4 loss 6.16\n" in written.err and "on stdout" in written.out  # Ray's log of the worker


def test_a_path_relative_to_the_workers_folder_is_forwarded_absolute(tmp_path, monkeypatch):
    checkpoint = tmp_path / "w" / "out" / "checkpoints" / "step-000004"
    checkpoint.mkdir(parents=True)
    (tmp_path / "ray" / "session" / "worker").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "ray" / "session" / "worker")  # a Ray worker's working folder
    q: queue.Queue = queue.Queue()
    with forwarding(q):
        print(f"[ftc] checkpoint (best eval loss): {os.path.relpath(checkpoint)}", file=sys.stderr)
        print("[ftc] ../not/a/path stays as written; so does a ratio 3/4", file=sys.stderr)
    assert [line for _, line in _sent(q)] == [
        f"[ftc] checkpoint (best eval loss): {checkpoint}\n",
        "[ftc] ../not/a/path stays as written; so does a ratio 3/4\n",
    ]


def test_a_queue_that_fails_ends_the_forwarding_not_the_run(capfd):
    class Gone:
        def put(self, item):
            raise ConnectionError("the driver is gone")

    with forwarding(Gone()):
        print("[ftc] step 1/4", file=sys.stderr)
        print("[ftc] step 2/4", file=sys.stderr)
    assert capfd.readouterr().err.count("[ftc] step") == 2  # still written where the worker writes


def test_the_driver_shows_what_comes_through_the_queue_where_the_user_reads_and_ray_output_goes_to_the_log(
    tmp_path,
):
    q: queue.Queue = queue.Queue()
    out, err = io.StringIO(), io.StringIO()
    log = tmp_path / "logs" / "ray.log"
    with logged_to(log):
        with shown(q, out, err):
            q.put(("err", "[ftc] step 1/4\n"))
            print("\x1b[36m(TrainController pid=9650)\x1b[0m Requesting resources", file=sys.stderr)
            q.put(("out", "on stdout\n"))
        q.put(("err", "[ftc] after the block: not shown\n"))
    assert err.getvalue() == "[ftc] step 1/4\n" and out.getvalue() == "on stdout\n"
    assert log.read_text() == "(TrainController pid=9650) Requesting resources\n"  # without terminal colours


def test_what_rays_core_writes_to_the_descriptors_while_connecting_goes_to_the_log(tmp_path, capfd):
    log = tmp_path / "logs" / "ray.log"
    with descriptors_logged_to(log):
        os.write(2, b"[2026-12-07 12:25:29,480 W 19322 19322] gcs_client.cc:210: Unauthenticated\n")
    os.write(2, b"after the block\n")
    assert "gcs_client.cc" in log.read_text() and "after the block" not in log.read_text()
    assert capfd.readouterr().err == "after the block\n"
