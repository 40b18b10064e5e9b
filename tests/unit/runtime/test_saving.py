"""What a checkpoint's files hold does not depend on the process or environment that wrote them."""

from __future__ import annotations

import json

from ftc.runtime.training import save_tokenizer
from ftc.runtime.training.checkpoint import stable_adapter_config


def test_a_saved_tokenizer_keeps_no_trace_of_how_it_was_loaded(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    for name, offline in (("online", False), ("offline", True)):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=offline, cache_dir=str(tmp_path / "c"))
        save_tokenizer(tokenizer, tmp_path / name)
        config = json.loads((tmp_path / name / "tokenizer_config.json").read_text())
        assert "local_files_only" not in config and "cache_dir" not in config
    assert (tmp_path / "online" / "tokenizer_config.json").read_bytes() == (
        tmp_path / "offline" / "tokenizer_config.json"
    ).read_bytes()


def test_an_adapter_config_lists_its_target_modules_in_one_order(tmp_path):
    written = []
    for order in (["v_proj", "q_proj", "up_proj"], ["up_proj", "v_proj", "q_proj"]):
        folder = tmp_path / "-".join(order)
        folder.mkdir()
        (folder / "adapter_config.json").write_text(
            json.dumps({"r": 8, "target_modules": order, "layers_to_transform": [3, 1]})
        )
        stable_adapter_config(folder)
        written.append((folder / "adapter_config.json").read_bytes())
    assert written[0] == written[1]
    config = json.loads(written[0])
    assert config["target_modules"] == ["q_proj", "up_proj", "v_proj"]
    assert config["layers_to_transform"] == [3, 1]  # a user's list keeps its order
