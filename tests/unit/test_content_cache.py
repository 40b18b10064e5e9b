"""The content-addressed download cache: verified before use, resumable, one download for concurrent users."""

from __future__ import annotations

import hashlib
import multiprocessing
import time

import pytest

from ftc.stores.content_cache import ContentCache, DigestMismatch

DATA = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(DATA).hexdigest()


def _chunks(start: int, end: int | None = None, fail_at: int | None = None):
    stop = len(DATA) if end is None else end
    for i in range(start, stop, 65536):
        if fail_at is not None and i >= fail_at:
            raise ConnectionError("connection reset")
        yield DATA[i : min(i + 65536, stop)]


def test_a_download_is_stored_by_its_sha256_and_reused(tmp_path):
    cache = ContentCache(tmp_path)
    calls = []
    path, sha = cache.fetch({"k": 1}, lambda start, end: (calls.append(start), _chunks(start, end))[1])
    assert sha == SHA and path.read_bytes() == DATA and path == cache.object_path(SHA)
    assert cache.fetch({"k": 1}, lambda start, end: pytest.fail("downloaded twice"))[1] == SHA
    assert calls == [0]


def test_wrong_bytes_are_refused_and_not_kept(tmp_path):
    cache = ContentCache(tmp_path)
    with pytest.raises(DigestMismatch) as info:
        cache.fetch({"k": 2}, _chunks, expected_sha256="0" * 64)
    assert info.value.found == SHA
    assert not cache.object_path(SHA).exists() and cache.known({"k": 2}) is None


def test_an_interrupted_download_resumes_where_it_stopped(tmp_path):
    cache = ContentCache(tmp_path)
    with pytest.raises(ConnectionError):
        cache.fetch({"k": 3}, lambda start, end: _chunks(start, end, fail_at=5 * 65536))
    assert cache.known({"k": 3}) is None  # nothing half-written looks complete
    starts = []
    path, sha = cache.fetch(
        {"k": 3}, lambda start, end: (starts.append(start), _chunks(start, end))[1], expected_sha256=SHA
    )
    assert starts == [5 * 65536] and sha == SHA and path.read_bytes() == DATA


def test_an_interrupted_download_with_nothing_to_check_it_against_starts_over(tmp_path):
    cache = ContentCache(tmp_path)
    with pytest.raises(ConnectionError):
        cache.fetch({"k": 4}, lambda start, end: _chunks(start, end, fail_at=5 * 65536))
    starts = []
    path, sha = cache.fetch({"k": 4}, lambda start, end: (starts.append(start), _chunks(start, end))[1])
    assert starts == [0] and sha == SHA  # kept bytes nothing could verify are not trusted


def _fetch_in_another_process(root, log):
    def slow(start, end):
        with open(log, "a") as f:
            f.write("download\n")
        for chunk in _chunks(start, end):
            time.sleep(0.01)
            yield chunk

    ContentCache(root).fetch({"k": 4}, slow, expected_sha256=SHA)


def test_two_processes_fetching_the_same_input_download_it_once(tmp_path):
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_fetch_in_another_process, args=(tmp_path / "cache", log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "download\n"
    assert ContentCache(tmp_path / "cache").object_path(SHA).read_bytes() == DATA


def test_a_large_object_comes_as_parallel_ranges_and_resumes_the_missing_ones(tmp_path):
    cache = ContentCache(tmp_path)
    cache.ranged_above, cache.part_size = 256 << 10, 128 << 10  # 1 MiB -> 8 ranges
    part = 128 << 10
    completed = []

    def flaky(start, end):
        if start == 3 * part:
            raise ConnectionError("connection reset")
        yield from _chunks(start, end)
        completed.append(start)

    with pytest.raises(ConnectionError):
        cache.fetch({"k": 5}, flaky, size=len(DATA), expected_sha256=SHA)
    assert cache.known({"k": 5}) is None
    # ranges 0-2 had started before range 3 failed, so they completed; ranges not yet started when it failed
    # (which ones depends on the threads) were cancelled
    assert {0, part, 2 * part} <= set(completed)
    asked = []
    path, sha = cache.fetch(
        {"k": 5},
        lambda start, end: (asked.append((start, end)), _chunks(start, end))[1],
        size=len(DATA),
        expected_sha256=SHA,
    )
    assert (3 * part, 4 * part) in asked
    assert not {start for start, _ in asked} & set(completed)  # no completed range is fetched again
    assert sha == SHA and path.read_bytes() == DATA


def _ranged_cache(tmp_path, warnings: list) -> ContentCache:
    cache = ContentCache(tmp_path, warn=warnings.append)
    cache.ranged_above, cache.part_size = 256 << 10, 128 << 10  # 1 MiB -> 8 ranges
    return cache


def _interrupted(cache: ContentCache, key: dict) -> None:
    def flaky(start, end):
        if start == 3 * cache.part_size:
            raise ConnectionError("connection reset")
        yield from _chunks(start, end)

    with pytest.raises(ConnectionError):
        cache.fetch(key, flaky, size=len(DATA), expected_sha256=SHA, parts=2)  # range 0 completes before 3 starts


def test_a_flipped_byte_in_a_cached_object_is_caught_evicted_and_downloaded_again(tmp_path):
    warnings: list[str] = []
    cache = ContentCache(tmp_path, warn=warnings.append)
    path, _ = cache.fetch({"uri": "s3://b/k"}, _chunks, expected_sha256=SHA)
    blob = bytearray(path.read_bytes())
    blob[1000] ^= 1
    path.write_bytes(bytes(blob))
    calls = []
    again, sha = cache.fetch({"uri": "s3://b/k"}, lambda s, e: (calls.append(s), _chunks(s, e))[1])
    assert calls == [0] and sha == SHA and again.read_bytes() == DATA
    assert len(warnings) == 1 and "the cached copy of s3://b/k" in warnings[0] and "downloading it again" in warnings[0]


def test_a_pin_record_that_is_not_one_is_dropped_not_followed(tmp_path):
    warnings: list[str] = []
    cache = ContentCache(tmp_path, warn=warnings.append)
    cache.fetch({"k": 7}, _chunks)
    (note,) = (tmp_path / "pins").iterdir()
    note.write_text('{"sha256": "../../../etc/passwd"}')
    assert cache.known({"k": 7}) is None and not note.exists()
    assert "not a pin record of this cache" in warnings[0]


def test_a_torn_range_record_restarts_the_download_instead_of_failing_every_run(tmp_path):
    warnings: list[str] = []
    cache = _ranged_cache(tmp_path, warnings)
    _interrupted(cache, {"k": 8})
    (record,) = (tmp_path / "partial").glob("*.parts")
    record.write_text("[0, 131")  # torn mid-write
    asked = []
    path, sha = cache.fetch(
        {"k": 8}, lambda s, e: (asked.append(s), _chunks(s, e))[1], size=len(DATA), expected_sha256=SHA
    )
    assert sha == SHA and path.read_bytes() == DATA and sorted(asked) == list(range(0, len(DATA), 128 << 10))
    assert "not a record of completed ranges; starting the download over" in warnings[0]


def test_a_flipped_byte_in_a_completed_range_is_downloaded_again_not_cached(tmp_path):
    warnings: list[str] = []
    cache = _ranged_cache(tmp_path, warnings)
    _interrupted(cache, {"k": 9})
    (partial,) = (tmp_path / "partial").glob("*.part")
    with open(partial, "r+b") as f:  # inside range 0, which the record says is complete
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    path, sha = cache.fetch({"k": 9}, _chunks, size=len(DATA), expected_sha256=SHA)
    assert sha == SHA and path.read_bytes() == DATA
    assert "the resumed download does not verify; starting over" in warnings[0]
    assert not list((tmp_path / "partial").iterdir())


def test_a_failure_while_hashing_ranges_stores_nothing(tmp_path, monkeypatch):
    import os

    cache = ContentCache(tmp_path)
    cache.ranged_above, cache.part_size = 256 << 10, 128 << 10

    def broken_read(fd, buffers, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "preadv", broken_read)
    with pytest.raises(OSError, match="Input/output error"):
        cache.fetch({"k": 6}, _chunks, size=len(DATA))  # no expected digest: a wrong one must not be recorded
    assert cache.known({"k": 6}) is None and not list((tmp_path / "objects").rglob("*"))


def test_a_folder_view_never_links_outside_its_folder(tmp_path):
    cache = ContentCache(tmp_path)
    for bad in ("../escape.json", "/etc/passwd", "a/../../b", "a//b"):
        with pytest.raises(ValueError, match="not a relative path inside the folder"):
            cache.view("v", {bad: SHA})
    assert not (tmp_path / "views" / "escape.json").exists()


def test_a_view_holds_its_members_only_and_a_stray_link_goes_without_what_it_points_at(tmp_path):
    cache = ContentCache(tmp_path)
    cache.fetch({"k": "v"}, _chunks, expected_sha256=SHA)
    view = cache.view("v", {"sub/model.safetensors": SHA})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the cache's")
    (view / "added_tokens.json").write_text("{}")  # planted: a loader would read it too
    (view / "sub" / "other").symlink_to(outside / "keep.txt")
    (view / "linked").symlink_to(outside)
    (view / ".tmp-of-a-writer").write_text("dot-entries are not content")
    assert cache.view("v", {"sub/model.safetensors": SHA}) == view
    assert sorted(p.name for p in view.rglob("*")) == [".tmp-of-a-writer", "model.safetensors", "sub"]
    assert (outside / "keep.txt").read_text() == "not the cache's"


def test_the_background_writer_writes_every_chunk_in_order_and_raises_write_errors_in_the_reader():
    import io

    from ftc.stores.downloads import _BackgroundWriter

    out = io.BytesIO()
    with _BackgroundWriter(out, depth=2) as writer:
        for i in range(50):
            writer.write(bytes([i]) * 3)
    assert out.getvalue() == b"".join(bytes([i]) * 3 for i in range(50))

    out = io.BytesIO()
    with pytest.raises(ConnectionError):  # the reading failed: what arrived before is in the file (a resumable prefix)
        with _BackgroundWriter(out) as writer:
            writer.write(b"abc")
            raise ConnectionError("reset")
    assert out.getvalue() == b"abc"

    class Full(io.RawIOBase):
        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        with _BackgroundWriter(Full()) as writer:
            for _ in range(10):
                writer.write(b"x")


def test_a_download_that_ends_early_is_a_store_failure_and_resumes_where_it_ended(tmp_path):
    from ftc.stores.remote import RemoteProblem

    cache = ContentCache(tmp_path)
    with pytest.raises(RemoteProblem, match="the download ended after 327680 of 1048576 bytes") as info:
        cache.fetch({"k": 10}, lambda start, end: _chunks(start, 5 * 65536), size=len(DATA), expected_sha256=SHA)
    assert info.value.reason == "unreachable" and cache.known({"k": 10}) is None
    starts = []
    path, sha = cache.fetch(
        {"k": 10},
        lambda start, end: (starts.append(start), _chunks(start, end))[1],
        size=len(DATA),
        expected_sha256=SHA,
    )
    assert starts == [5 * 65536] and sha == SHA
    ranged = _ranged_cache(tmp_path / "r", [])
    with pytest.raises(RemoteProblem, match="the download ended early"):
        ranged.fetch({"k": 11}, lambda start, end: _chunks(start, start + 1000), size=len(DATA), expected_sha256=SHA)


def test_the_first_failed_input_stops_the_other_downloads_and_keeps_what_they_had(tmp_path):
    from ftc.stores.downloads import DownloadStopped, run_downloads

    cache = ContentCache(tmp_path)

    def slow(start, end):
        for chunk in _chunks(start, end):
            time.sleep(0.2)  # 16 chunks: 3.2 s in all
            yield chunk

    def fails():
        time.sleep(0.3)
        raise RuntimeError("the other input is gone")

    started = time.monotonic()
    results = run_downloads(
        {"big": lambda: cache.fetch({"k": 12}, slow, size=len(DATA), expected_sha256=SHA), "small": fails},
        first_failure_stops=True,
    )
    assert time.monotonic() - started < 1.5  # not the 3.2 s the big download would take
    assert isinstance(results["small"], RuntimeError) and isinstance(results["big"], DownloadStopped)
    (partial,) = (tmp_path / "partial").glob("*.part")
    assert 0 < partial.stat().st_size < len(DATA)  # kept for a resume
    assert cache.fetch({"k": 12}, _chunks, size=len(DATA), expected_sha256=SHA)[1] == SHA  # and nothing stays stopped


def test_a_warning_naming_a_pins_uri_shows_it_redacted_and_escaped(tmp_path, capsys):
    uri = "http://u:SECRET-pw@host/k\x1b[2J"  # a pin from a plan someone else wrote
    cache = ContentCache(tmp_path)
    path, _ = cache.fetch({"uri": uri}, _chunks, expected_sha256=SHA)
    path.write_bytes(b"not the bytes")
    assert cache.fetch({"uri": uri}, _chunks)[1] == SHA
    err = capsys.readouterr().err
    assert "warning: the cached copy of http://***@host/k\\x1b[2J" in err
    assert "SECRET" not in err and "\x1b" not in err
