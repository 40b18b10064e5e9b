"""Writes go only where meant: no file ftc writes follows a link planted at its name, and no output replaces a
device, a FIFO, a socket, a folder or a link; an output inside what a command reads is refused."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import pytest

from ftc.errors import ExitCode, StorageFailed, UsageError
from ftc.runtime.launch.lock import output_lock
from ftc.runtime.training.progress import MetricsLog
from ftc.stores.atomic import check_output_path, clear_planted, open_regular, write_text_atomic

PLAN_ID = "sha256:" + "0" * 64


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


# --- the output folder's lock ----------------------------------------------------------------------------------


def test_a_lock_symlink_planted_in_the_output_folder_is_refused_and_its_target_left_intact(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ftc-lock-node0").symlink_to(victim)
    with pytest.raises(StorageFailed) as caught:
        with output_lock(out, node_rank=0, plan_id=PLAN_ID):
            pytest.fail("the lock was taken through a link")
    assert caught.value.exit_code == ExitCode.STORAGE_FAILED == 15
    assert f"{out / '.ftc-lock-node0'} is a symbolic link (to {victim}), not a file ftc wrote" in str(caught.value)
    assert "fix: remove it (and find out how it got there), or choose another output_dir" in str(caught.value)
    assert victim.read_text() == "precious\n"


def test_a_lock_of_another_node_planted_as_a_dangling_link_makes_no_file_where_it_points(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".ftc-lock-node3").symlink_to(tmp_path / "made-by-ftc")
    with pytest.raises(StorageFailed, match="is a symbolic link"):
        with output_lock(out, node_rank=3, plan_id=PLAN_ID):
            pass
    assert not (tmp_path / "made-by-ftc").exists()  # O_CREAT through a dangling link would have made it


def test_a_fifo_or_a_folder_at_the_lock_name_is_refused_without_waiting(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / ".ftc-lock-node0")
    (out / ".ftc-lock-node1").mkdir()
    started = time.monotonic()
    with pytest.raises(StorageFailed, match=r"\.ftc-lock-node0 is a FIFO \(named pipe\), not a file ftc wrote"):
        with output_lock(out, node_rank=0, plan_id=PLAN_ID):
            pass
    with pytest.raises(StorageFailed, match=r"\.ftc-lock-node1 is a folder, not a file ftc wrote"):
        with output_lock(out, node_rank=1, plan_id=PLAN_ID):
            pass
    assert time.monotonic() - started < 5
    assert stat.S_ISFIFO(os.lstat(out / ".ftc-lock-node0").st_mode)


@pytest.mark.parametrize("name", ["metrics.jsonl", "summary.json"])
def test_a_link_or_fifo_planted_at_a_file_the_run_writes_is_refused_when_the_lock_is_taken(tmp_path, victim, name):
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to(victim)
    with pytest.raises(StorageFailed, match=f"{name} is a symbolic link \\(to .*victim.txt\\), not a file ftc wrote"):
        with output_lock(out, node_rank=0, plan_id=PLAN_ID):
            pytest.fail("training would have started")
    (out / name).unlink()
    os.mkfifo(out / name)
    with pytest.raises(StorageFailed, match=f"{name} is a FIFO"):
        with output_lock(out, node_rank=0, plan_id=PLAN_ID):
            pytest.fail("training would have started")
    assert victim.read_text() == "precious\n" and (out / ".ftc-lock-node0").read_text() == ""
    (out / name).unlink()
    (out / name).write_text("{}\n")  # what an earlier run left: fine
    with output_lock(out, node_rank=0, plan_id=PLAN_ID):
        pass


def test_a_real_lock_file_is_still_taken_and_emptied_after(tmp_path):
    out = tmp_path / "out"
    with output_lock(out, node_rank=0, plan_id=PLAN_ID):
        assert json.loads((out / ".ftc-lock-node0").read_text())["plan_id"] == PLAN_ID
    assert (out / ".ftc-lock-node0").read_text() == ""


# --- metrics.jsonl ----------------------------------------------------------------------------------------------


def test_a_metrics_jsonl_symlink_is_neither_appended_to_nor_read_on_resume(tmp_path, victim):
    for resumed in (None, 4):
        (tmp_path / "metrics.jsonl").unlink(missing_ok=True)
        (tmp_path / "metrics.jsonl").symlink_to(victim)
        with pytest.raises(StorageFailed, match=r"metrics\.jsonl is a symbolic link \(to .*victim\.txt\)") as caught:
            MetricsLog(tmp_path / "metrics.jsonl", enabled=True, keep_until_step=resumed)
        assert caught.value.exit_code == 15
        assert victim.read_text() == "precious\n"
    assert not list(tmp_path.glob(".metrics.jsonl.*.tmp"))  # the resume's temp file went with the refusal


def test_a_resume_never_writes_through_a_link_planted_at_the_old_temp_name(tmp_path, victim):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, 6)))
    (tmp_path / "metrics.tmp").symlink_to(victim)  # the name an earlier ftc used for the rewrite
    MetricsLog(path, enabled=True, keep_until_step=2).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert victim.read_text() == "precious\n" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# --- write_text_atomic ------------------------------------------------------------------------------------------


def test_write_text_atomic_never_replaces_a_device(tmp_path):
    with pytest.raises(UsageError) as caught:
        write_text_atomic("/dev/null", "x")
    assert str(caught.value).startswith("/dev/null is a character device, not a regular file; ftc does not replace")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_write_text_atomic_never_replaces_a_link_but_writes_a_regular_file(tmp_path, victim):
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(UsageError, match=r"link\.json is a symbolic link \(to .*victim\.txt\); ftc neither writes"):
        write_text_atomic(link, "{}")
    assert link.is_symlink() and victim.read_text() == "precious\n"
    assert write_text_atomic(tmp_path / "new.json", "{}").read_text() == "{}"
    assert write_text_atomic(victim, "replaced").read_text() == "replaced"  # a regular file is replaced whole


def test_write_text_atomic_says_which_error_its_caller_wants(tmp_path):
    os.mkfifo(tmp_path / "summary.json")
    with pytest.raises(StorageFailed, match=r"summary\.json is a FIFO \(named pipe\), not a regular file"):
        write_text_atomic(tmp_path / "summary.json", "{}", error=StorageFailed)
    assert not [p for p in tmp_path.iterdir() if p.name != "summary.json"]  # no temp file left


# --- check_output_path ------------------------------------------------------------------------------------------


def _refused(path, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        check_output_path(path, **kwargs)
    assert caught.value.exit_code == ExitCode.USAGE == 2
    return str(caught.value)


def test_an_output_that_is_a_socket_or_a_file_where_a_folder_goes_is_refused(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    try:
        assert "-o " + str(tmp_path / "sock") + " is a socket, not a regular file" in _refused(tmp_path / "sock")
    finally:
        server.close()
    (tmp_path / "file").write_text("x")
    message = _refused(tmp_path / "file", folder=True)
    assert f"-o {tmp_path / 'file'} is a file, not a folder; ftc does not replace it" in message
    assert "fix: give the path of a new folder" in message
    assert (tmp_path / "file").read_text() == "x"


def test_an_output_under_a_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    message = _refused(tmp_path / "file" / "deeper" / "r.html")
    assert f"{tmp_path / 'file'} is not a folder\n    fix: give a path under a folder" in message


def test_a_dangling_link_as_output_is_refused_and_nothing_is_made_where_it_points(tmp_path):
    (tmp_path / "out.html").symlink_to(tmp_path / "elsewhere.html")
    assert "is a symbolic link (to " in _refused(tmp_path / "out.html")
    assert not (tmp_path / "elsewhere.html").exists()


def test_an_output_inside_what_is_read_is_refused_however_it_is_spelled(tmp_path, monkeypatch):
    checkpoint = tmp_path / "runs" / "checkpoints" / "step-4"
    checkpoint.mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "into").symlink_to(checkpoint)  # a linked folder above the output
    monkeypatch.chdir(tmp_path / "elsewhere")
    for spelled in (
        checkpoint / "eval.jsonl",
        checkpoint / "sub" / "deeper" / "x",  # folders that do not exist yet
        "into/eval.jsonl",
        "../runs/checkpoints/step-4/../step-4/eval.jsonl",  # relative, with ..
        f"{checkpoint}/",  # the checkpoint itself, with a trailing slash
    ):
        message = _refused(spelled, not_inside=[checkpoint], folder=str(spelled).endswith("/"))
        itself = str(spelled).endswith("/")
        assert f"is {'' if itself else 'inside '}{checkpoint}, which this command reads" in message, spelled
        assert f"fix: write it {'elsewhere' if itself else 'outside that folder'}" in message
    # beside it is fine, and so is a name that only starts the same
    assert check_output_path(tmp_path / "runs" / "checkpoints" / "step-40" / "x", not_inside=[checkpoint])
    assert check_output_path(tmp_path / "runs" / "report.html", not_inside=[checkpoint])


def test_clear_planted_removes_the_link_not_what_it_points_to(tmp_path, victim):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep").write_text("k")
    (tmp_path / "a").symlink_to(folder)
    (tmp_path / "b").symlink_to(victim)
    clear_planted(tmp_path / "a")
    clear_planted(tmp_path / "b")
    clear_planted(tmp_path / "absent")
    assert not os.path.lexists(tmp_path / "a") and not os.path.lexists(tmp_path / "b")
    assert (folder / "keep").read_text() == "k" and victim.read_text() == "precious\n"
    clear_planted(folder)  # a real folder is left to its caller
    assert (folder / "keep").exists()


def test_open_regular_refuses_a_device_it_could_otherwise_truncate():
    with pytest.raises(StorageFailed, match="/dev/null is a character device, not a file ftc wrote"):
        open_regular("/dev/null", os.O_RDWR | os.O_CREAT)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_hard_link_planted_at_the_lock_or_metrics_name_is_refused_and_its_other_file_left_intact(tmp_path, victim):
    out = tmp_path / "out"
    out.mkdir()
    os.link(victim, out / ".ftc-lock-node0")  # O_NOFOLLOW does not see a hard link: the link count does
    with pytest.raises(StorageFailed, match=r"\.ftc-lock-node0 has 1 other name\(s\) \(a hard link\)"):
        with output_lock(out, node_rank=0, plan_id=PLAN_ID):
            pass
    os.link(victim, tmp_path / "metrics.jsonl")
    with pytest.raises(StorageFailed, match=r"metrics\.jsonl has 2 other name\(s\) \(a hard link\)"):
        MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    assert victim.read_text() == "precious\n"


def test_an_output_that_is_a_hard_link_to_a_checkpoint_file_is_replaced_not_written_through(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "README.md").write_text("the record's bytes")
    os.link(checkpoint / "README.md", tmp_path / "card.md")
    write_text_atomic(check_output_path(tmp_path / "card.md", not_inside=[checkpoint]), "new")
    assert (tmp_path / "card.md").read_text() == "new"
    assert (checkpoint / "README.md").read_text() == "the record's bytes"  # a rename gives the name a new file


def test_the_process_own_stdout_by_any_of_its_names_is_refused():
    for name in ("/dev/stdout", "/proc/self/fd/1", "/dev/fd/1"):
        if os.path.lexists(name):
            assert "is a symbolic link (to " in _refused(name), name
    assert os.path.islink("/dev/stdout")  # still the machine's link, not a file


def _chunks(data: bytes, start: int, end: int | None, fail_at: int | None = None):
    for i in range(start, len(data) if end is None else end, 65536):
        if fail_at is not None and i >= fail_at:
            raise ConnectionError("connection reset")
        yield data[i : min(i + 65536, len(data) if end is None else end)]


@pytest.mark.parametrize("ranged", [False, True])
def test_a_link_planted_at_a_partial_download_in_a_shared_cache_is_refused_not_written_through(
    tmp_path, victim, ranged
):
    import hashlib

    from ftc.stores.content_cache import ContentCache

    data = bytes(range(256)) * 4096
    cache = ContentCache(tmp_path / "cache")
    cache.ranged_above, cache.part_size = 256 << 10, 128 << 10
    options = dict(size=len(data), parts=2) if ranged else dict(parts=1)
    with pytest.raises(ConnectionError):
        cache.fetch({"k": 1}, lambda s, e: _chunks(data, s, e, fail_at=5 * 65536), **options)
    (partial,) = (tmp_path / "cache" / "partial").glob("*.part")
    partial.unlink()
    partial.symlink_to(victim)  # another user of the cache, between two attempts
    with pytest.raises(StorageFailed) as caught:
        cache.fetch({"k": 1}, lambda s, e: _chunks(data, s, e), expected_sha256=hashlib.sha256(data).hexdigest(),
                    **options)  # fmt: skip
    assert f"{partial} is a symbolic link (to {victim}), not a file ftc wrote" in str(caught.value)
    assert "fix: remove it (and find out how it got there), or set FTC_CACHE_DIR to a folder of your own" in str(
        caught.value
    )
    assert victim.read_text() == "precious\n"  # not truncated, extended or overwritten with the object's bytes


def test_a_link_planted_at_the_stat_cache_database_is_not_written_through(tmp_path, capsys):
    from ftc.stores.hashing import StatCache

    empty = tmp_path / "empty-victim"
    empty.write_bytes(b"")  # SQLite would make a database of an empty file
    db = tmp_path / "cache" / "statcache.sqlite3"
    db.parent.mkdir()
    db.symlink_to(empty)  # (SQLite itself removes a link at -wal or -journal: measured)
    data = tmp_path / "data.bin"
    data.write_bytes(b"x" * 1000)
    cache = StatCache(db)
    st = data.stat()
    assert cache.lookup(data, st) is None
    cache.store(data, st, "0" * 64)
    assert empty.read_bytes() == b""  # before, it became the cache's database (20 KiB)
    assert "is a link or not a file, so not one ftc wrote" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["pin", "object"])
def test_a_link_planted_at_a_cache_lock_is_refused_not_truncated(tmp_path, victim, kind):
    from ftc.stores.content_cache import ContentCache

    data = b"abc" * 1000
    cache = ContentCache(tmp_path / "cache")
    cache.fetch({"k": 2}, lambda s, e: iter([data[s:e]]))
    locks = sorted((tmp_path / "cache" / "locks").glob("*.lock"), key=lambda p: p.name.startswith("object-"))
    assert len(locks) == 2  # the pin's, then the object's (one placement of the same bytes at a time)
    lock = locks[kind == "object"]
    lock.unlink()
    lock.symlink_to(victim)
    (tmp_path / "cache" / "pins").rename(tmp_path / "cache" / "pins-gone")  # downloaded again: both locks taken
    with pytest.raises(StorageFailed, match=r"\.lock is a symbolic link \(to .*victim\.txt\), not a file ftc wrote"):
        cache.fetch({"k": 2}, lambda s, e: iter([data[s:e]]))
    assert victim.read_text() == "precious\n"


def test_where_a_planted_link_points_is_shown_with_its_control_characters_escaped(tmp_path):
    (tmp_path / "out.html").symlink_to("x\x1b[2J\rverified")
    message = _refused(tmp_path / "out.html")
    assert "\x1b" not in message and "\r" not in message and "verified" in message
