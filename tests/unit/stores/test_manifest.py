"""Folder manifests (format ftc-manifest/2): no file name forges an entry, names that cannot be shown are refused,
and a plan pinned by the older format says so instead of reporting a changed folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftc.errors import ExitCode
from ftc.stores.hashing import (
    FileDigest,
    NotAnInput,
    hash_tree,
    legacy_manifest_digest,
    manifest_digest,
    manifest_text,
    name_problem,
)

from conftest import read_json


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_file_named_like_a_second_entry_no_longer_forges_another_folders_digest():
    tokenizer, config = b'{"model": "real"}', b'{"tokenizer_class": "x"}'
    real = [FileDigest("tokenizer.json", 17, _sha(tokenizer)), FileDigest("tokenizer_config.json", 24, _sha(config))]
    # one file, whose *name* holds a newline and the second entry of the real folder's format-1 manifest
    forged = [FileDigest(f"tokenizer.json\n{_sha(config)}  tokenizer_config.json", 17, _sha(tokenizer))]
    assert legacy_manifest_digest(forged) == legacy_manifest_digest(real)  # what the old format let through
    assert manifest_digest(forged) != manifest_digest(real)


def test_a_file_name_holding_a_newline_is_refused_when_the_folder_is_walked(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")
    (folder / f"tokenizer.json\n{'0' * 64}  tokenizer_config.json").write_text("{}")
    with pytest.raises(NotAnInput, match=r"the file name 'tokenizer.json\\n0{64}  tokenizer_config.json' holds a"):
        hash_tree(folder)


def test_compile_refuses_a_weights_folder_with_a_control_character_in_a_name(job, ftc, tmp_path, tiny_model):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    (weights / "notes\x1b[2J.txt").write_text("clear the screen")
    r = ftc("compile", job(initial_base_model_ckpt_path=str(weights)), "-o", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "$.initial_base_model_ckpt_path" in r.err
    assert "the file name 'notes\\x1b[2J.txt' holds a control character" in r.err and "rename the file" in r.err
    assert "\x1b" not in r.err  # shown escaped, never obeyed
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",  # NUL (a DVC or store listing can name one; a file system cannot)
        "a\rverified",
        "a\tb",
        "x\x7f",
        "x\x85y",  # C1 next line
        "evil\u202egnp.exe",  # right-to-left override
        "a\u200bb",  # zero-width space
        "a\u2028b",  # line separator
        "tag\U000e0041",  # invisible tag character
        "bad\udcffbyte",  # bytes that are not UTF-8
    ],
)
def test_names_that_cannot_be_shown_or_pinned_are_refused(name: str):
    problem = name_problem(name)
    assert problem is not None and "rename the file" in problem
    assert not any(ord(c) < 0x20 for c in problem)


@pytest.mark.parametrize("name", ["model.safetensors", "sub/dir/ünïcode-名前.json", "a b.txt", "x@y:z", "-" * 255])
def test_ordinary_names_are_accepted(name: str):
    assert name_problem(name) is None


def test_names_that_look_alike_after_unicode_normalization_are_different_entries(tmp_path):
    composed, decomposed = unicodedata.normalize("NFC", "café.json"), unicodedata.normalize("NFD", "café.json")
    assert composed != decomposed
    one, both = tmp_path / "one", tmp_path / "both"
    one.mkdir()
    both.mkdir()
    (one / composed).write_text("{}")
    (both / composed).write_text("{}")
    (both / decomposed).write_text("{}")
    found = hash_tree(both)
    assert sorted(f.path for f in found) == sorted([composed, decomposed])
    assert manifest_digest(found) != manifest_digest(hash_tree(one))


def test_a_long_name_and_many_files_make_an_ordinary_manifest(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    long_name = "n" * 250 + ".json"
    (folder / long_name).write_text("{}")
    for i in range(3000):
        (folder / f"shard-{i:05d}.bin").write_bytes(i.to_bytes(4, "little"))
    files = hash_tree(folder)
    assert len(files) == 3001
    entries = json.loads(manifest_text(files))["files"]
    assert entries[0][0] == long_name and len({name for name, _ in entries}) == 3001


_NAMES = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
_FILES = st.dictionaries(_NAMES, st.binary(max_size=4).map(_sha), max_size=6)


@settings(max_examples=300, deadline=None)
@given(_FILES)
def test_a_manifest_reads_back_to_exactly_its_entries(files: dict[str, str]):
    """Whatever the names hold (quotes, newlines, two spaces and a digest), the manifest decodes to the same list:
    two different folders cannot share it."""
    digests = [FileDigest(name, 0, sha) for name, sha in files.items()]
    read = json.loads(manifest_text(digests))
    assert read["format"] == "ftc-manifest/2"
    assert read["files"] == [[name, files[name]] for name in sorted(files)]


@settings(max_examples=300, deadline=None)
@given(_FILES, _FILES)
def test_different_folders_have_different_manifests(a: dict[str, str], b: dict[str, str]):
    if a != b:
        text = lambda f: manifest_text([FileDigest(n, 0, s) for n, s in f.items()])  # noqa: E731
        assert text(a) != text(b)


def test_a_plan_pinned_by_the_older_manifest_format_says_so_at_run_time(job, ftc, tmp_path, tiny_model):
    from ftc.spec.plan_format import seal_plan

    plan_path = tmp_path / "plan.json"
    assert ftc("compile", job(num_epochs=1), "-o", plan_path).code == 0
    plan = read_json(plan_path)
    files = hash_tree(Path(tiny_model))
    assert plan["inputs"]["base_model"]["digest"] == manifest_digest(files)
    plan["inputs"]["base_model"]["digest"] = legacy_manifest_digest(files)  # what an older ftc wrote
    plan.pop("plan_id")
    plan_path.write_text(json.dumps(seal_plan(plan), indent=2))
    r = ftc("run", plan_path)
    assert r.code == ExitCode.PLAN_INVALID, r.err
    assert "base_model: the plan pins" in r.err and "folder manifest of an older ftc (format 1" in r.err
    assert "recompile the spec with this ftc" in r.err and "changed since" not in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()
    assert os.environ.get("FTC_TRACKER_OFF") is None


def test_a_file_name_that_is_not_utf8_is_refused_at_compile_not_a_traceback(job, ftc, tmp_path, tiny_model):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    with open(os.path.join(os.fsencode(weights), b"notes-\xff.txt"), "wb") as f:
        f.write(b"latin-1 name")
    r = ftc("compile", job(initial_base_model_ckpt_path=str(weights)), "-o", tmp_path / "plan.json")
    assert r.code == ExitCode.INPUT_UNRESOLVABLE, r.err
    assert "the file name 'notes-\\xff.txt' is not UTF-8" in r.err and "rename the file" in r.err


def test_lineage_diff_compares_a_folder_pinned_by_an_older_ftc_by_its_files():
    from ftc.lineage.diff import input_differences

    files = [FileDigest("config.json", 0, _sha(b"{}")), FileDigest("model.safetensors", 0, _sha(b"w"))]
    listed = [{"path": f.path, "sha256": f.sha256} for f in files]

    def record(digest: str, listed: list[dict]) -> dict:
        source = {"source": "local", "kind": "dir", "given": "model"}
        return {"parents": [{"role": "base_model", "relation": "base", "source": source, "digest": digest,
                             "files": listed}]}  # fmt: skip

    old, new = record(legacy_manifest_digest(files), listed), record(manifest_digest(files), listed)
    assert input_differences(old, new) == []  # the same files: no false difference
    changed = record(manifest_digest(files[:1]), listed[:1])
    (line,) = input_differences(new, changed)
    assert line.startswith(f"base_model: {manifest_digest(files)} (model) -> {manifest_digest(files[:1])}")
