"""What in a weights folder a loader could run is found before anything of it is read: Python files anywhere (by
name, whatever case, symlinks and folders included) and an ``auto_map``/``custom_pipelines`` key at any depth of any
config file; a config file that cannot be read is refused too."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftc.errors import ExitCode, InputUnresolvable
from ftc.stores.weights_folder import code_in_folder, code_in_names, refuse_code


@pytest.fixture
def folder(tmp_path) -> Path:
    """A weights folder without code: configs, a tokenizer, weights, and a checkpoint's DeepSpeed state."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    # a vocabulary may hold any token, "auto_map" too: tokenizer.json is no config
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"auto_map": 5}}}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    (tmp_path / "training_state").mkdir()
    (tmp_path / "training_state" / "zero_to_fp32.py").write_text("# DeepSpeed's recovery script\n")
    return tmp_path


def test_a_folder_without_code_passes_deepspeeds_recovery_script_and_a_vocabulary_token_aside(folder):
    assert code_in_folder(folder) == []
    refuse_code(folder, "the base weights")
    assert code_in_names(["model.safetensors", "training_state/zero_to_fp32.py"]) == []


def test_auto_map_in_the_tokenizer_config_and_a_python_file_are_refused_with_exit_4(folder):
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": ["x.T", None]}}))
    (folder / "x.py").write_text("raise SystemExit('imported')\n")
    with pytest.raises(InputUnresolvable) as caught:
        refuse_code(folder, "the base weights")
    assert caught.value.exit_code == ExitCode.INPUT_UNRESOLVABLE
    message = str(caught.value)
    assert message.startswith(f"{folder} (the base weights) holds code that loading it could run: ")
    assert "a Python file: x.py" in message and "`auto_map` in tokenizer_config.json" in message
    assert "\n    fix: use weights whose configs name only classes built into transformers" in message


@pytest.mark.parametrize(
    "config, key",
    [
        ({"text_config": {"auto_map": {"AutoConfig": "x.C"}}}, "`text_config.auto_map` in config.json"),
        ({"sub_configs": [{"a": {"auto_map": {}}}]}, "`sub_configs[0].a.auto_map` in config.json"),
        ({"custom_pipelines": {"text-generation": {"impl": "p.P"}}}, "`custom_pipelines` in config.json"),
    ],
)
def test_a_code_key_nested_at_any_depth_is_found(folder, config, key):
    (folder / "config.json").write_text(json.dumps(config))
    assert code_in_folder(folder) == [key]


@pytest.mark.parametrize(
    "name",
    ["preprocessor_config.json", "processor_config.json", "adapter_config.json", "generation_config.json"],
)
def test_every_config_a_loader_reads_is_looked_at(folder, name):
    (folder / name).write_text(json.dumps({"auto_map": {"AutoProcessor": "p.P"}}))
    assert code_in_folder(folder) == [f"`auto_map` in {name}"]


def test_python_files_are_found_by_name_in_any_case_in_subfolders_and_as_symlinks_or_folders(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "target.txt").write_text("not python")
    (folder / "MODELING.PY").write_text("")
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "cached.pyc").write_bytes(b"")
    os.symlink(elsewhere / "target.txt", folder / "linked.py")
    os.symlink(elsewhere, folder / "linked_folder")  # never followed
    (elsewhere / "inside.py").write_text("")
    (folder / "module.py").mkdir()  # a folder named like a module: what `import module` would find too
    (folder / "training_state" / "evil.py").write_text("")  # only DeepSpeed's own script names are let through
    found = code_in_folder(folder)
    assert found == [
        "a Python file: MODELING.PY",
        "a Python file: cached.pyc",
        "a Python file: linked.py",
        "a Python file: module.py",
        "a Python file: pkg/__init__.py",
        "a Python file: training_state/evil.py",
    ]
    assert code_in_names(["pkg/__init__.py", "a/B.Py", "model.safetensors"]) == ["a/B.Py", "pkg/__init__.py"]


def test_a_config_that_cannot_be_read_is_refused_not_read_forever(folder):
    (folder / "config.json").unlink()
    os.mkfifo(folder / "config.json")  # a loader would block on it
    (folder / "tokenizer_config.json").write_text("[" * 100_000 + "]" * 100_000)  # deeper than any parser goes
    found = code_in_folder(folder)
    assert len(found) == 2
    assert found[0].startswith("config.json cannot be read (") and "FIFO" in found[0]
    assert found[1].startswith("tokenizer_config.json cannot be read (")


def test_a_file_name_holding_escape_sequences_is_shown_escaped(folder):
    (folder / "\x1b[2Jx.py").write_text("")
    with pytest.raises(InputUnresolvable) as caught:
        refuse_code(folder, "the adapter")
    assert "a Python file: \\x1b[2Jx.py" in str(caught.value) and "\x1b" not in str(caught.value)


def test_a_config_that_links_to_itself_or_is_too_large_is_refused_not_followed(folder):
    (folder / "config.json").unlink()
    os.symlink("config.json", folder / "config.json")  # a loop: never resolves
    with open(folder / "generation_config.json", "wb") as f:
        f.truncate(17 << 20)  # past the 16 MiB a config may be
    found = code_in_folder(folder)
    assert found[0].startswith("config.json cannot be read (") and "symlink loop" in found[0]
    assert found[1].startswith("generation_config.json cannot be read (")


def test_a_folder_of_more_entries_than_a_weights_folder_has_is_refused_without_walking_it_all(folder, monkeypatch):
    import ftc.stores.weights_folder as weights_folder

    monkeypatch.setattr(weights_folder, "_MAX_ENTRIES", 50)
    for i in range(60):
        (folder / f"shard-{i}.bin").write_bytes(b"")
    assert code_in_folder(folder)[-1] == "more than 50 files and folders: not a weights folder"
