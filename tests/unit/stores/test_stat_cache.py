"""The stat cache (sha256 per unchanged file): a damaged database is started afresh, one locked by another process
is waited for briefly and then done without; either way every digest is still right."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time

from ftc.stores.hashing import StatCache, hash_file


def _old_file(path, data: bytes):
    path.write_bytes(data)
    past = time.time() - 60
    os.utime(path, (past, past))  # old enough to be remembered
    return path


def test_a_damaged_stat_cache_is_started_afresh_with_a_warning(tmp_path, capsys):
    db = tmp_path / "statcache.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    f = _old_file(tmp_path / "f.bin", b"abc")
    with StatCache(db) as cache:
        assert hash_file(f, cache)[0] == hashlib.sha256(b"abc").hexdigest()
    assert "statcache.sqlite3: damaged (file is not a database); starting it afresh" in capsys.readouterr().err
    with StatCache(db) as cache:  # and it works again: the digest comes from it
        assert hash_file(f, cache)[0] == hashlib.sha256(b"abc").hexdigest() and cache.hits == 1


def test_a_stat_cache_locked_by_another_process_costs_seconds_not_minutes(tmp_path, capsys):
    db = tmp_path / "statcache.sqlite3"
    with StatCache(db) as cache:
        hash_file(_old_file(tmp_path / "warm.bin", b"x"), cache)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        files = [_old_file(tmp_path / f"{i}.bin", bytes([i]) * 10) for i in range(50)]
        started = time.monotonic()
        with StatCache(db) as cache:
            digests = [hash_file(f, cache)[0] for f in files]
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert digests == [hashlib.sha256(bytes([i]) * 10).hexdigest() for i in range(50)]
    assert took < 6, f"{took:.1f} s"
    err = capsys.readouterr().err
    assert err.count("statcache.sqlite3: not used (") == 1 and "locked" in err
    assert "every file is hashed in full this time" in err
    with sqlite3.connect(db) as check:  # released: usable again
        check.execute("SELECT count(*) FROM files").fetchone()


def test_an_audit_hashes_every_file_again_and_leaves_what_it_found_for_later_checks(tmp_path):
    db = tmp_path / "statcache.sqlite3"
    f = _old_file(tmp_path / "f.bin", b"abc")
    with StatCache(db) as cache:
        hash_file(f, cache)
    with StatCache(db, reuse=False) as audit:  # a remembered digest is not taken: the file is read again
        assert hash_file(f, audit)[0] == hashlib.sha256(b"abc").hexdigest()
        assert (audit.hits, audit.misses) == (0, 1)
    g = _old_file(tmp_path / "g.bin", b"def")
    with StatCache(db, reuse=False) as audit:
        hash_file(g, audit)
    with StatCache(db) as cache:  # what the audit found spares the next check
        assert hash_file(g, cache)[0] == hashlib.sha256(b"def").hexdigest() and cache.hits == 1
