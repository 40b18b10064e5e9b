"""Digests of files and folders, and the stat cache that makes recompiling unchanged inputs free."""

from __future__ import annotations

import hashlib
import json
import os

from ftc.stores.hashing import StatCache, hash_file, hash_tree, manifest_digest, manifest_text

from conftest import age


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    (root / ".hidden").write_bytes(b"not content")
    return root


def test_folder_digest_is_the_sha256_of_its_versioned_json_manifest(tmp_path):
    root = _tree(tmp_path / "w")
    files = hash_tree(root)
    assert [f.path for f in files] == ["a.txt", "sub/b.bin"]  # dot-entries are not content
    sums = {f.path: hashlib.sha256((root / f.path).read_bytes()).hexdigest() for f in files}
    manifest = json.dumps(
        {"files": [["a.txt", sums["a.txt"]], ["sub/b.bin", sums["sub/b.bin"]]], "format": "ftc-manifest/2"},
        separators=(",", ":"),
    )
    assert manifest_text(files) == manifest
    assert manifest_digest(files) == "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()


def test_unchanged_files_come_from_the_stat_cache(tmp_path):
    root = _tree(tmp_path / "w")
    age(root)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        first = hash_tree(root, cache)
        assert (cache.hits, cache.misses) == (0, 2)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        assert hash_tree(root, cache) == first
        assert (cache.hits, cache.misses) == (2, 0)


def test_a_changed_file_is_rehashed_even_with_the_same_size_and_mtime(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"one")
    age(path)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        before, _ = hash_file(path, cache)
    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"two")
    os.utime(path, ns=(mtime, mtime))  # same size, same mtime: only ctime/inode tell
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        after, _ = hash_file(path, cache)
        assert cache.misses == 1
    assert after == hashlib.sha256(b"two").hexdigest() != before


def test_a_file_modified_just_now_is_not_cached(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"still being written")
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        hash_file(path, cache)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        hash_file(path, cache)
        assert cache.misses == 1


def test_an_unwritable_cache_only_disables_caching(tmp_path):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("")
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with StatCache(blocker / "cache.sqlite3") as cache:
        assert hash_file(path, cache)[0] == hashlib.sha256(b"x").hexdigest()
