"""A process's scratch folders: private, and those a killed process left behind removed by the next one made; never a
running process's, another host's or user's, a link or a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from ftc.stores.scratch import left_over, scratch, scratch_folder

from conftest import REPO

HOST = socket.gethostname().replace("-", "_")
WHERE = f"{HOST}.{os.stat('/proc/self/ns/pid').st_ino}"  # the host and its process-id namespace


def _killed_process_folder(root) -> str:
    """A real process makes a compiled-code scratch folder in ``root`` and is killed outright (SIGKILL)."""
    code = (
        "import sys, time\nfrom ftc.stores.scratch import scratch_folder\n"
        "folder = scratch_folder('compiled', root=sys.argv[1])\n(folder / 'code.py').write_text('x')\n"
        "print(folder, flush=True)\ntime.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    folder = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return folder


def test_a_killed_processs_folder_is_removed_by_the_next_one_made(tmp_path):
    killed = _killed_process_folder(tmp_path)
    assert os.path.isdir(killed) and os.path.basename(killed).startswith("ftc-compiled-")
    mine = scratch_folder("ray", root=tmp_path)
    assert not os.path.exists(killed)
    assert mine.is_dir() and mine.stat().st_mode & 0o777 == 0o700
    assert mine.name.startswith(f"ftc-ray-{WHERE}-{os.getpid()}-")


def test_what_is_not_a_killed_processs_folder_is_left_alone(tmp_path):
    gone = 2**22 + 7  # no such process
    running = tmp_path / f"ftc-run-{WHERE}-{os.getppid()}-abc"  # a running process's (the test runner's parent)
    other_host = tmp_path / f"ftc-run-another_host.{WHERE.split('.')[-1]}-{gone}-abc"
    # a container's, sharing this host's name but not its process ids (or a folder mounted there from the host)
    other_namespace = tmp_path / f"ftc-run-{HOST}.4026531999-{gone}-abc"
    not_ours = tmp_path / f"other-run-{WHERE}-{gone}-abc"
    for folder in (running, other_host, other_namespace, not_ours):
        folder.mkdir()
    target = tmp_path / "kept"
    target.mkdir()
    (target / "data").write_text("kept")
    link = tmp_path / f"ftc-run-{WHERE}-{gone}-link"  # no such process: but a link, never followed
    link.symlink_to(target)
    file = tmp_path / f"ftc-run-{WHERE}-{gone + 1}-file"
    file.write_text("a file")
    assert left_over(tmp_path) == []
    with scratch("run", root=tmp_path) as folder:
        assert folder.is_dir()
    assert not folder.exists()  # removed when the block ends
    for path in (running, other_host, other_namespace, not_ours, link, file):
        assert path.exists() or path.is_symlink(), path
    assert (target / "data").read_text() == "kept"


def test_a_killed_processs_folder_is_found_as_left_over_before_it_is_removed(tmp_path):
    killed = _killed_process_folder(tmp_path)
    assert [str(p) for p in left_over(tmp_path)] == [killed]
