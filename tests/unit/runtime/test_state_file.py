"""DeepSpeed's training state as ftc saves it: safetensors with its structure in JSON, never pickle. Every kind of
value DeepSpeed's state holds comes back as it was; a real engine resumed from it trains on exactly as the engine
that saved it (fp32's torch AdamW, bf16's flat optimizer, ZeRO 3's); what is not ftc's format is refused unread."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ftc.runtime.training.state_file import FORMAT, NotStateFile, read_state_file, write_state_file

from support.engines import tiny_engine


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return type(a) is type(b) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "__dict__") and not isinstance(a, type):
        return type(a) is type(b) and _same(vars(a), vars(b))
    return type(a) is type(b) and a == b


def test_every_kind_of_value_deepspeeds_state_holds_comes_back_as_it_was(tmp_path):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    flat = torch.arange(12, dtype=torch.float32)
    state = {
        "module": OrderedDict(a=flat[:6].view(2, 3), b=flat[6:], tied=flat[6:]),  # views sharing one storage
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 5).t()}}, "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None, "fused": True}]},
        "dtypes": [torch.bfloat16, torch.float32], "shapes": {"w": torch.Size([4, 5])}, ("a", 1): "tuple key",
        "numbers": [0, -1, 2**70, 1.5, float("inf"), float("-inf"), float("nan"), True, None, "text ü"],
        "tensors": [torch.ones(3, dtype=torch.bfloat16), torch.zeros(0), torch.tensor(True), torch.tensor(7),
                    torch.ones(2, dtype=torch.float16), torch.ones(2, dtype=torch.int32)],
        "ds": [LossScaler(scale=1), ZeroStageEnum.optimizer_states, fragment_address(numel=4, start=8)],
    }  # fmt: skip
    write_state_file(state, tmp_path / "s.safetensors")
    back = read_state_file(tmp_path / "s.safetensors")
    assert _same(state, back)
    assert back["ds"][1] is ZeroStageEnum.optimizer_states and back["ds"][0].cur_scale == 1
    assert back["module"]["b"] is back["module"]["tied"]  # one tensor, as torch's own loading shares a storage
    with safe_open(str(tmp_path / "s.safetensors"), framework="pt") as f:  # the official reader takes it
        assert f.metadata()["format"] == FORMAT and len(f.keys()) == 10  # the tied tensor written once


def test_what_is_read_is_the_processs_own_not_the_file_mapped(tmp_path):
    path = tmp_path / "s.safetensors"
    write_state_file({"exp_avg": torch.ones(1024)}, path)
    back = read_state_file(path)
    with open(path, "r+b") as f:  # the file rewritten in place after it was read (and verified)
        f.seek(path.stat().st_size - 4096)
        f.write(bytes(4096))
    assert torch.equal(back["exp_avg"], torch.ones(1024))
    os.truncate(path, 100)  # ... or cut short: no bus error when the state is used
    assert float(back["exp_avg"].sum()) == 1024


def test_a_value_ftc_does_not_save_is_refused_when_saving(tmp_path):
    with pytest.raises(TypeError, match="training state holds a builtins.set, which ftc does not save"):
        write_state_file({"a": {1, 2}}, tmp_path / "s.safetensors")
    with pytest.raises(TypeError, match="complex64 tensor"):
        write_state_file({"a": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "s.safetensors")


def _planted(tmp_path, structure) -> str:
    path = tmp_path / "s.safetensors"
    save_file({"t0": torch.zeros(2)}, str(path), metadata={"format": FORMAT, "structure": json.dumps(structure)})
    with pytest.raises(NotStateFile) as refused:
        read_state_file(path)
    return str(refused.value)


@pytest.mark.parametrize(
    "structure",
    [
        {"$value": "system", "state": "touch /tmp/x"},  # a type ftc never writes
        {"$value": "LossScaler", "state": {}, "extra": 1},
        {"$dtype": "nn"},  # torch.nn is not a dtype
        {"$dict": [[["a"], 1]]},  # a list as a key
        {"$tensor": 1},  # no such tensor
        {"$code": "print(1)"},
        {"$tuple": [1], "$tensor": 0},
        json.loads("[" * 100 + "]" * 100),  # deeper than any state
        [1, 2],  # not a dict at the top
    ],
)
def test_a_planted_structure_ftc_never_writes_is_refused(tmp_path, structure):
    assert "its structure is not one ftc writes" in _planted(tmp_path, structure)


def test_a_dtype_is_read_from_ftcs_table_never_as_an_attribute_that_imports_a_module(tmp_path):
    # in a fresh process (this one has imported much of torch already): torch's lazy attributes import their module
    path = tmp_path / "s.safetensors"
    structure = {"$dict": [["d", {"$dtype": "onnx"}]]}
    save_file({"t0": torch.zeros(2)}, str(path), metadata={"format": FORMAT, "structure": json.dumps(structure)})
    code = (
        "import sys\nfrom ftc.runtime.training.state_file import NotStateFile, read_state_file\n"
        "try:\n    read_state_file(sys.argv[1])\nexcept NotStateFile as exc:\n    print(exc)\n"
        "print('imported' if 'torch.onnx' in sys.modules else 'not imported')\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert "its structure is not one ftc writes" in done.stdout, done.stderr
    assert done.stdout.strip().endswith("not imported")


def test_a_pickle_or_another_file_is_refused_unread(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "p.safetensors")
    with pytest.raises(NotStateFile, match=r"p.safetensors: torch's pickle format \(ftc never unpickles\)"):
        read_state_file(tmp_path / "p.safetensors")
    (tmp_path / "t.safetensors").write_text("hello")
    with pytest.raises(NotStateFile, match="t.safetensors: not a safetensors file, not training state ftc wrote"):
        read_state_file(tmp_path / "t.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "w.safetensors"))  # weights, not a state
    with pytest.raises(NotStateFile, match="a safetensors file, but not training state ftc wrote"):
        read_state_file(tmp_path / "w.safetensors")
    with pytest.raises(NotStateFile, match="gone.safetensors: cannot be read"):  # no such file: no traceback
        read_state_file(tmp_path / "gone.safetensors")


def test_a_file_gone_between_its_refusal_and_its_description_is_said_to_be_unreadable(tmp_path, monkeypatch):
    """safetensors refuses the file, which is gone (or unreadable) when its first bytes are looked at to say what it
    is: said as such, not a traceback."""
    import safetensors

    (tmp_path / "s.safetensors").write_text("hello")
    refuse = safetensors.safe_open

    def refused_then_gone(path, *args, **kwargs):
        try:
            return refuse(path, *args, **kwargs)
        finally:
            Path(path).unlink()

    monkeypatch.setattr(safetensors, "safe_open", refused_then_gone)
    with pytest.raises(NotStateFile, match="s.safetensors: not a readable file, not training state ftc wrote"):
        read_state_file(tmp_path / "s.safetensors")


def _train(engine, steps: int) -> list[float]:
    torch.manual_seed(0)
    losses = []
    for _ in range(steps):
        ids = torch.randint(3, 60, (2, 12))
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("precision", "stage"), [("fp32", 0), ("bf16", 0), ("fp32", 3), ("bf16", 3)])
def test_an_engine_resumed_from_its_saved_state_trains_on_as_the_one_that_saved_it(
    single_process, tiny_model, tmp_path, monkeypatch, precision, stage
):
    from ftc.runtime.training.checkpoint import TAG, load_training_state

    monkeypatch.chdir(tmp_path)  # the checkpoint named by a relative path, as a plan's output folder may be

    engine = tiny_engine(tiny_model, precision, stage)
    _train(engine, 2)
    engine.save_checkpoint(str(tmp_path / "step" / "training_state"), tag=TAG, save_latest=False)
    files = sorted(p.name for p in (tmp_path / "step" / "training_state" / TAG).iterdir())
    assert files and all(n.endswith(".safetensors") for n in files if not n.endswith(".py")), files
    expected = _train(engine, 2)
    resumed = tiny_engine(tiny_model, precision, stage)
    load_training_state(resumed, Path("step"), strict=True)
    assert resumed.global_steps == 2
    assert _train(resumed, 2) == expected  # the same weights, optimizer moments and schedule: the same losses


def test_a_state_in_ftcs_format_that_is_not_deepspeeds_is_refused(single_process, tiny_model, tmp_path):
    from ftc.errors import ExitCode, LineageBroken
    from ftc.runtime.training.checkpoint import load_training_state

    (tmp_path / "step" / "training_state" / "state").mkdir(parents=True)
    write_state_file({}, tmp_path / "step" / "training_state" / "state" / "mp_rank_00_model_states.safetensors")
    with pytest.raises(LineageBroken) as refused:
        load_training_state(tiny_engine(tiny_model, "fp32"), tmp_path / "step", strict=True)
    assert refused.value.exit_code == ExitCode.LINEAGE_BROKEN
    assert f"{tmp_path / 'step'}: its training state lacks 'module' that DeepSpeed reads; refused" in str(refused.value)


def test_a_checkpoint_without_its_state_files_is_refused_not_resumed_from_scratch(single_process, tiny_model, tmp_path):
    from ftc.errors import ExitCode, LineageBroken
    from ftc.runtime.training.checkpoint import load_training_state

    (tmp_path / "step" / "training_state" / "state").mkdir(parents=True)  # DeepSpeed alone would log and go on
    with pytest.raises(LineageBroken) as refused:
        load_training_state(tiny_engine(tiny_model, "fp32"), tmp_path / "step", strict=True)
    assert refused.value.exit_code == ExitCode.LINEAGE_BROKEN
    assert f"{tmp_path / 'step'}: it holds no training state under training_state/state/" in str(refused.value)
