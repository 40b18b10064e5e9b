"""An input is checked against the plan's digest and then read: a write in between (or while it is read) must not
go unseen, and weights once loaded must not follow their file."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from ftc.errors import ExitCode, InputChanged
from ftc.spec.plan import read_plan
from ftc.stores.content_cache import ContentCache
from ftc.stores.hashing import StatCache, hash_file, hash_tree

from conftest import age


def _overwrite_tensors(path) -> None:
    """Zero every tensor byte of a safetensors file in place (same file, same size, other weights)."""
    os.chmod(path, 0o644)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        header = int.from_bytes(f.read(8), "little")
        f.seek(8 + header)
        f.write(b"\0" * (size - 8 - header))


def test_a_file_written_or_relinked_after_it_was_hashed_is_named_and_one_left_alone_is_not(tmp_path):
    for name in ("kept", "written", "gone", "a", "b"):
        (tmp_path / name).write_text(name)
    (tmp_path / "linked").symlink_to(tmp_path / "a")
    age(tmp_path)
    with StatCache(tmp_path / "stat.sqlite3") as cache:
        for name in ("kept", "written", "gone", "linked"):
            hash_file(tmp_path / name, cache)
    assert cache.read.changed() == []
    (tmp_path / "written").write_text("other")
    (tmp_path / "gone").unlink()
    (tmp_path / "linked").unlink()
    (tmp_path / "linked").symlink_to(tmp_path / "b")  # the same name now leads to other bytes
    assert cache.read.changed() == [tmp_path / n for n in ("written", "gone", "linked")]


def test_a_file_added_to_a_folder_after_it_was_listed_is_named(tmp_path):
    folder = tmp_path / "weights"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    age(tmp_path)
    with StatCache(tmp_path / "stat.sqlite3") as cache:
        hash_tree(folder, cache)
    (folder / ".hidden").write_text("not content")  # (dot-entries are not part of a folder)
    assert cache.read.changed() == []
    (folder / "sub" / "added_tokens.json").write_text("{}")  # a file transformers would read too
    assert cache.read.changed() == [folder / "sub" / "added_tokens.json"]
    assert cache.read.within(folder / "sub").changed() == [] and cache.read.within(folder).changed() != []


def test_a_write_while_a_file_is_hashed_is_seen_afterwards(tmp_path, monkeypatch):
    """The stamp is taken before hashing: bytes changed under the hash cannot pass as the ones hashed."""
    import ftc.stores.hashing as hashing

    (tmp_path / "folder").mkdir()
    data = tmp_path / "folder" / "data.bin"
    data.write_bytes(b"x" * 4096)
    age(tmp_path)
    hash_bytes = hashing._sha256_file

    def written_while_hashed(path):
        digest = hash_bytes(path)
        with open(path, "ab") as f:
            f.write(b"y")
        return digest

    monkeypatch.setattr(hashing, "_sha256_file", written_while_hashed)
    with StatCache(tmp_path / "stat.sqlite3") as cache:
        hash_tree(tmp_path / "folder", cache)
    assert cache.read.changed() == [data]


def test_a_cached_object_verified_and_then_written_is_named(tmp_path):
    blob = b"weights" * 1000
    cache = ContentCache(tmp_path)
    path, _ = cache.fetch({"k": 1}, lambda start, end: iter([blob[start:end]]))
    again = ContentCache(tmp_path)
    assert again.known({"k": 1}) == path  # verified through the stat cache this time
    assert cache.read.changed() == [] and again.read.changed() == []
    os.chmod(path, 0o644)
    path.write_bytes(b"other")
    assert cache.read.changed() == [path] and again.read.changed() == [path]


def test_the_same_bytes_fetched_for_a_second_pin_leave_the_first_ones_file_alone(tmp_path):
    """Two inputs holding one file (a base's and an adapter's tokenizer.json): the second download must not replace
    the object the first one's reader verified (a false alarm, or bytes swapped under a reader)."""
    blob = b"same tokenizer" * 1000
    cache = ContentCache(tmp_path)
    first, _ = cache.fetch({"k": "base"}, lambda start, end: iter([blob[start:end]]))
    inode = first.stat().st_ino
    second, _ = cache.fetch({"k": "adapter"}, lambda start, end: iter([blob[start:end]]))
    assert second == first and first.stat().st_ino == inode
    assert cache.read.changed() == [] and not list((tmp_path / "partial").iterdir())


def test_the_same_bytes_fetched_at_once_for_two_pins_are_placed_once(tmp_path):
    """Two downloads of one file finishing together (threads of one run, or two processes) must not both place it:
    the second rename would change the object under the first one's reader."""
    import threading

    blob = b"same tokenizer" * 1000
    for round in range(5):
        root = tmp_path / str(round)
        both_done = threading.Barrier(2)

        def opener(start, end, both_done=both_done):
            yield blob[start:end]
            both_done.wait(timeout=30)  # both downloads complete, neither placed yet

        caches = [ContentCache(root), ContentCache(root)]
        threads = [threading.Thread(target=c.fetch, args=({"k": i}, opener)) for i, c in enumerate(caches)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [c.read.changed() for c in caches] == [[], []], round


def test_a_plans_inputs_written_after_they_were_verified_are_refused_by_role(job, ftc, tmp_path):
    from ftc.runtime.training.inputs import verify_inputs

    assert ftc("compile", job(), "-o", tmp_path / "plan.json").code == 0
    found = verify_inputs(read_plan(tmp_path / "plan.json"))
    found.check_unchanged()  # nothing written: nothing to say
    (tmp_path / "data" / "valid.jsonl").write_text("")
    with pytest.raises(InputChanged) as info:
        found.check_unchanged()
    assert info.value.exit_code == ExitCode.INPUT_CHANGED
    message = str(info.value)
    assert f"    valid: {tmp_path / 'data' / 'valid.jsonl'}\n" in message and "train:" not in message
    assert "changed while ftc read it" in message and "fix: run again once nothing writes the input" in message


def test_loaded_weights_are_copies_not_the_files_pages(tiny_model, tiny_adapter, tmp_path):
    """A mapped safetensors file's tensors are its pages: writing the file would change a model already loaded
    (and checked). ftc's loaders read the bytes instead."""
    from ftc.runtime.training.model import pretrained_adapter, pretrained_causal_lm

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    shutil.copytree(tiny_model, base)
    shutil.copytree(tiny_adapter, adapter)
    model = pretrained_causal_lm(base, dtype=torch.float32)  # the file's own dtype: nothing to convert
    model = pretrained_adapter(model, adapter, is_trainable=True)  # (peft copies an adapter's weights itself today)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    _overwrite_tensors(base / "model.safetensors")
    _overwrite_tensors(adapter / "adapter_model.safetensors")
    assert any(value.abs().sum() > 0 for value in before.values())
    assert [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])] == []


def test_a_cache_entry_is_parsed_from_the_bytes_that_were_verified(tmp_path, capsys, monkeypatch):
    """The token and reference caches: read once, hashed, parsed from those bytes; a write to the file once it is
    read (or a file named by its own digest that ftc never wrote) reaches nothing."""
    import hashlib
    import json

    import numpy as np
    from safetensors.numpy import save

    import ftc.runtime.training.cache_files as cache_files
    from ftc.runtime.training.cache_files import read_cache_file, store_cache_file

    key = tmp_path / "tokens" / "key.safetensors"
    stored = {"ids": np.arange(6, dtype=np.int32), "lines": np.array([1, 2], dtype=np.int64)}
    store_cache_file(key, stored, {"bad": "[]"})
    [path] = key.parent.iterdir()
    read_bytes = cache_files.read_bounded_bytes

    def written_once_read(file, **kwargs):
        data = read_bytes(file, **kwargs)
        file.write_bytes(data[:-8] + b"\xff" * 8)  # the ids' last bytes, between the hash and the parse
        return data

    monkeypatch.setattr(cache_files, "read_bounded_bytes", written_once_read)
    entry = read_cache_file(key, lambda entry: entry)
    assert entry is not None and entry.metadata == {"bad": "[]"}
    assert entry.tensors["ids"].tolist() == list(range(6)) and entry.tensors["lines"].tolist() == [1, 2]
    monkeypatch.setattr(cache_files, "read_bounded_bytes", read_bytes)
    assert read_cache_file(key, lambda entry: entry) is None
    assert "is not the bytes it was stored as" in capsys.readouterr().err and not path.exists()

    deep = (100_000).to_bytes(8, "little") + b"[" * 100_000  # a header nested past Python's recursion limit
    wrong_keys = save({"other": np.zeros(2)}, metadata={"bad": "[]"})  # safetensors, but not what ftc stores there
    deep_metadata = save({"ids": np.zeros(2)}, metadata={"bad": "[" * 100_000})
    for planted in (b"not safetensors", deep, wrong_keys, deep_metadata):
        (key.parent / f"key.{hashlib.sha256(planted).hexdigest()}.safetensors").write_bytes(planted)
        assert read_cache_file(key, lambda entry: (entry.tensors["ids"], json.loads(entry.metadata["bad"]))) is None
        assert "cannot be used (" in capsys.readouterr().err and not list(key.parent.iterdir())

    (key.parent / "key.not-a-digest.safetensors").write_bytes(b"x" * 100)  # not a name ftc gives: not even read
    (key.parent / f"key.{'0' * 64}.safetensors").mkdir()  # a folder so named: cannot be removed, said so
    assert read_cache_file(key, lambda entry: entry) is None
    assert f"{key.parent / ('key.' + '0' * 64 + '.safetensors')} could not be removed" in capsys.readouterr().err
    assert (key.parent / "key.not-a-digest.safetensors").exists()
