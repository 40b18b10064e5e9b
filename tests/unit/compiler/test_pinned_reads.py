"""What compile reads of an input for the plan (a DeepSpeed file's settings, a weights folder's config.json, an
adapter's adapter_config.json, a parent's lineage record, a data file's count of examples) is read from the bytes it
pinned: a file rewritten
between its hashing and its reading is a problem (compile again), never a plan that pins one version and describes
another, nor a cached check of other bytes under the pinned digest."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.compiler import check_inputs, resolve_inputs
from ftc.errors import ExitCode, SpecInvalid
from ftc.spec import load_spec
from ftc.stores.hashing import StatCache
from ftc.stores.sources import ResolveContext


def _compile_with_a_write_between(spec_path, tmp_path, write) -> SpecInvalid:
    """Resolve (hash) the spec's inputs, ``write()``, then check them (read): the problems raised."""
    loaded = load_spec(spec_path)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        inputs = resolve_inputs(loaded, ResolveContext(base_dir=loaded.source.base_dir, plan_dir=tmp_path, cache=cache))
        assert not loaded.problems
        write()
        check_inputs(loaded, inputs, cache)
    with pytest.raises(SpecInvalid) as raised:
        loaded.raise_if_problems()
    return raised.value


def test_a_deepspeed_file_rewritten_after_it_was_pinned(job, tmp_path):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    spec = job(deepspeed={"config_path": "ds.json"})
    error = _compile_with_a_write_between(spec, tmp_path, lambda: ds.write_text('{"zero_optimization": {"stage": 3}}'))
    assert f"$.deepspeed.config_path: {ds} changed while ftc read it" in str(error)
    assert "fix: compile again once nothing writes the input" in str(error)
    assert error.exit_code == ExitCode.INPUT_UNRESOLVABLE and len(error.problems) == 1


@pytest.mark.parametrize("name", ["config.json", "adapter_config.json"])
def test_a_folders_json_rewritten_after_it_was_pinned(job, tmp_path, tiny_model, tiny_adapter, name):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_adapter if name == "adapter_config.json" else tiny_model, folder)
    key = "initial_adapter_model_ckpt_path" if name == "adapter_config.json" else "initial_base_model_ckpt_path"
    spec = job(**{key: str(folder)})
    config = json.loads((folder / name).read_text())
    rewrite = lambda: (folder / name).write_text(json.dumps({**config, "r": 64, "hidden_size": 4096}))  # noqa: E731
    error = _compile_with_a_write_between(spec, tmp_path, rewrite)
    assert f"$.{key}: {folder / name} changed while ftc read it" in str(error)
    assert error.exit_code == ExitCode.INPUT_UNRESOLVABLE and len(error.problems) == 1


def test_a_parents_lineage_record_rewritten_after_it_was_pinned(job, tmp_path, tiny_model):
    folder = tmp_path / "parent"
    shutil.copytree(tiny_model, folder)
    (folder / "lineage.json").write_text("{}")  # compile reads a parent's record to check the parent against it
    spec = job(initial_base_model_ckpt_path=str(folder))
    rewrite = lambda: (folder / "lineage.json").write_text('{"record_id": "sha256:0"}')  # noqa: E731
    error = _compile_with_a_write_between(spec, tmp_path, rewrite)
    assert f"$.initial_base_model_ckpt_path: {folder / 'lineage.json'} changed while ftc read it" in str(error)
    assert error.exit_code == ExitCode.INPUT_UNRESOLVABLE and len(error.problems) == 1


def test_a_data_file_rewritten_after_it_was_pinned_is_not_counted_nor_cached(job, tmp_path):
    from support.models import arithmetic_examples, write_jsonl

    spec = job()
    train = tmp_path / "data" / "train.jsonl"
    pinned = train.read_bytes()  # 16 examples
    rewrite = lambda: write_jsonl(train, arithmetic_examples(3, seed=9))  # noqa: E731
    error = _compile_with_a_write_between(spec, tmp_path, rewrite)
    assert f"$.train_path: {train} changed while ftc read it" in str(error)
    assert error.exit_code == ExitCode.INPUT_UNRESOLVABLE and len(error.problems) == 1
    train.write_bytes(pinned)  # the pinned bytes back: their count is theirs, not the 3 read in between
    loaded = load_spec(spec)
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        inputs = resolve_inputs(loaded, ResolveContext(base_dir=loaded.source.base_dir, plan_dir=tmp_path, cache=cache))
        check_inputs(loaded, inputs, cache)
    assert not loaded.problems and inputs["train"].entry.records == 16


def test_files_left_alone_compile(job, tmp_path):
    (tmp_path / "ds.json").write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    loaded = load_spec(job(deepspeed={"config_path": "ds.json"}))
    with StatCache(tmp_path / "cache.sqlite3") as cache:
        inputs = resolve_inputs(loaded, ResolveContext(base_dir=loaded.source.base_dir, plan_dir=tmp_path, cache=cache))
        checked = check_inputs(loaded, inputs, cache)
    assert not loaded.problems and checked.deepspeed["zero_optimization"]["stage"] == 2
