"""No code from a weights folder runs: every ``from_pretrained`` call of the product (and of its benchmarks) says
``trust_remote_code=False``, so transformers never asks on stdin, and the loaders refuse a folder holding code
before transformers reads it."""

from __future__ import annotations

import ast
import json
import shutil

import pytest

from ftc.errors import ExitCode, InputUnresolvable

from conftest import REPO
from support.parts import parts

#: the folders whose Python ships (the parts pyproject.toml maps) or runs (tests build their own tiny models)
PRODUCT = (*parts(), "bench", "examples")


def _calls() -> list[tuple[str, int, ast.Call]]:
    found = []
    for folder in PRODUCT:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained":
                    found.append((str(path.relative_to(REPO)), node.lineno, node))
    return found


def test_every_from_pretrained_call_says_trust_remote_code_false():
    calls = _calls()
    assert len(calls) >= 10  # the loaders, the benchmarks, the examples' preparation
    missing = [
        f"{path}:{line}"
        for path, line, call in calls
        if not any(
            k.arg == "trust_remote_code" and isinstance(k.value, ast.Constant) and k.value.value is False
            for k in call.keywords
        )
    ]
    assert missing == []


@pytest.mark.parametrize("loader", ["pretrained_tokenizer", "pretrained_config", "pretrained_causal_lm"])
def test_each_loader_refuses_a_folder_with_code_before_transformers_reads_it(tiny_model, tmp_path, loader):
    import ftc.runtime

    folder = shutil.copytree(tiny_model, tmp_path / "weights")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputUnresolvable) as caught:
        getattr(ftc.runtime, loader)(folder, "the base weights")
    assert caught.value.exit_code == ExitCode.INPUT_UNRESOLVABLE
    assert "(the base weights) holds code that loading it could run: `auto_map` in config.json" in str(caught.value)


def test_a_model_id_with_remote_code_is_refused_by_transformers_itself_not_asked_about(tmp_path, monkeypatch):
    """A hub model (here: one in the offline cache layout) with auto_map: trust_remote_code=False makes transformers
    refuse it; the loader says so as an input that cannot be had."""
    import ftc.runtime

    with pytest.raises(InputUnresolvable) as caught:
        ftc.runtime.pretrained_tokenizer("ftc-tests/no-such-model", "the published tokenizer")
    assert "ftc-tests/no-such-model: the published tokenizer could not be loaded" in str(caught.value)
