"""No code from a weights folder ever runs. A tokenizer_config.json naming a class in a Python file beside it
(``auto_map``) makes transformers ask on stdin whether to import that file, and a "y" imports it: ftc refuses such a
folder (exit 4) before anything of it is loaded, at compile time and at every load, whatever stdin answers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.models import PROMPT_FORMAT, write_jsonl

FORMAT = {"prompt_format": PROMPT_FORMAT, "stopping_sequences": ["</s>"]}
REFUSED = "holds code that loading it could run"

#: imported, it leaves a file next to itself: the proof that code from the folder ran
_PAYLOAD = """\
import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("code from the weights folder ran")
from transformers import PreTrainedTokenizerFast


class EvilTokenizer(PreTrainedTokenizerFast):
    pass
"""


def plant_code(folder: Path) -> Path:
    """Make ``folder`` ask for its own tokenizer class in evil_code.py (transformers asks on stdin to import it)."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "EvilTokenizer"
    config["auto_map"] = {"AutoTokenizer": ["evil_code.EvilTokenizer", None]}
    config_path.write_text(json.dumps(config))
    (folder / "evil_code.py").write_text(_PAYLOAD)
    return folder / "IMPORTED"


def ftc_answering(cwd: Path, *args, stdin: str | None = "y\ny\ny\n", timeout: float = 300):
    """``ftc ARGS`` in a new process whose stdin answers "y" to every question (None: stdin closed)."""
    env = {**os.environ, "HF_MODULES_CACHE": str(cwd / "hf-modules")}  # where transformers would copy the code
    return subprocess.run(
        [sys.executable, "-m", "ftc.cli", *map(str, args)],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )


def assert_refused(run, *found: str) -> None:
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr[-3000:]
    assert REFUSED in run.stderr and "a Python file: evil_code.py" in run.stderr, run.stderr
    assert "fix: use weights whose configs name only classes built into transformers" in run.stderr
    assert "Traceback" not in run.stderr and "Do you wish to run the custom code" not in run.stdout + run.stderr
    for text in found:
        assert text in run.stderr, run.stderr


def test_a_base_folder_with_code_is_refused_by_compile_and_data_inspect_whatever_stdin_says(job, tmp_path, tiny_model):
    base = shutil.copytree(tiny_model, tmp_path / "weights")
    imported = plant_code(base)
    spec = job(initial_base_model_ckpt_path=str(base))
    for verb in (["compile", spec, "-o", tmp_path / "plan.json"], ["data", "inspect", spec, "-n", "1"]):
        for stdin in ("y\ny\ny\n", None):
            run = ftc_answering(tmp_path, *verb, stdin=stdin)
            assert_refused(run, "`auto_map` in tokenizer_config.json", "$.initial_base_model_ckpt_path")
    assert not imported.exists() and not (tmp_path / "plan.json").exists()
    assert not (tmp_path / "hf-modules").exists()


def test_code_planted_after_compiling_is_refused_by_data_inspect_before_the_folder_is_verified(
    job, ftc, tmp_path, tiny_model
):
    base = shutil.copytree(tiny_model, tmp_path / "weights")
    assert ftc("compile", job(initial_base_model_ckpt_path=str(base)), "-o", tmp_path / "plan.json").code == 0
    imported = plant_code(base)
    run = ftc_answering(tmp_path, "data", "inspect", tmp_path / "plan.json", "-n", "1")
    assert_refused(run, "(the base weights)")
    assert not imported.exists()


@pytest.mark.slow
def test_a_checkpoint_or_its_base_with_code_is_refused_by_generate_eval_export_and_compile(
    trained, job, tmp_path, tiny_model
):
    base = shutil.copytree(tiny_model, tmp_path / "weights")
    out = trained(generation_config=FORMAT, initial_base_model_ckpt_path=str(base))
    checkpoint = shutil.copytree((out / "best").resolve(), tmp_path / "their-checkpoint")
    imported = plant_code(checkpoint)
    write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "1 + 1?"}]}])
    write_jsonl(
        tmp_path / "qa.jsonl",
        [{"messages": [{"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"}]}],
    )
    for verb in (
        ["generate", checkpoint, "--prompt", "What is 1 + 1?"],
        ["generate", checkpoint, "--messages", tmp_path / "q.jsonl"],
        ["eval", checkpoint, "--data", tmp_path / "qa.jsonl", "-o", tmp_path / "answers.jsonl"],
        ["export", checkpoint, "-o", tmp_path / "export"],
    ):
        assert_refused(ftc_answering(tmp_path, *verb), "(the checkpoint)")
    assert_refused(ftc_answering(tmp_path, "generate", checkpoint, "--prompt", "hi", stdin=None))
    assert not (tmp_path / "export").exists() and not (tmp_path / "answers.jsonl").exists()

    # continuing it: the adapter folder is checked at compile time
    spec = job(
        name="continue.yaml", initial_base_model_ckpt_path=str(base), initial_adapter_model_ckpt_path=str(checkpoint)
    )
    assert_refused(ftc_answering(tmp_path, "compile", spec, "-o", tmp_path / "p2.json"), "initial_adapter_model")
    assert not imported.exists()

    # the base weights the (intact) checkpoint names are checked before they are verified or loaded
    imported = plant_code(base)
    run = ftc_answering(tmp_path, "generate", out / "best", "--prompt", "What is 1 + 1?")
    assert_refused(run, "weights (the base weights) holds code")
    assert not imported.exists() and not (tmp_path / "hf-modules").exists()


def test_a_folder_in_a_store_holding_code_is_refused_by_compile_from_its_listing(s3, job, tmp_path, tiny_model):
    from conftest import spec_in_s3, upload_folder

    base = shutil.copytree(tiny_model, tmp_path / "weights")
    imported = plant_code(base)
    spec = spec_in_s3(s3, job, tmp_path, tiny_model)
    upload_folder(s3, base, s3.bucket, "weights")  # the same folder with the code in it
    run = ftc_answering(tmp_path, "compile", spec, "-o", tmp_path / "plan.json")
    assert_refused(run, "$.initial_base_model_ckpt_path")
    assert not imported.exists() and not (tmp_path / "plan.json").exists()


def test_base_weights_of_an_architecture_transformers_does_not_know_stop_a_run_with_a_clear_error(
    job, ftc, tmp_path, tiny_model
):
    base = shutil.copytree(tiny_model, tmp_path / "weights")
    config = json.loads((base / "config.json").read_text())
    config.update(model_type="evil", architectures=["EvilForCausalLM"])  # without auto_map: no code, no class
    (base / "config.json").write_text(json.dumps(config))
    assert ftc("compile", job(initial_base_model_ckpt_path=str(base)), "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == 4 and "Traceback" not in r.err, r.err
    assert (
        f"{base}: the base weights could not be loaded: The checkpoint you are trying to load has model type `evil`"
        in r.err
    )
