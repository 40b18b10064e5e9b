"""The reference log-probabilities of preference pairs: computed once from the model as it is, stored in the cache
as safetensors named by their sha256 and read back (verified) by a later run; a run that resumes with other numbers
than it pinned is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftc.errors import ExitCode, InputChanged
from ftc.runtime.training.distributed import Dist
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.preference import Pairs, answer_logps, collate_pairs
from ftc.runtime.training.reference import Reference, check_reference, reference_cache, reference_logps

from support.preference import token_pairs

ONE = Dist(0, 0, 1, torch.device("cpu"))


def _pairs(n: int = 5) -> Pairs:
    return token_pairs(n, seed=0, rejected=(1, 5))


def _token_loss(model) -> TokenLoss:
    return TokenLoss(model, zero_stage=0)


def test_they_are_the_models_answer_logps_and_a_second_run_reads_them_from_the_cache(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    pairs = _pairs()
    cache = tmp_path / "reference-logps" / "key.safetensors"
    first = reference_logps(
        model, pairs, token_loss=_token_loss(model), cache_file=cache, pad_id=0, batch_size=2, dist=ONE
    )
    assert not first.cached and first.digest.startswith("sha256:")
    with torch.no_grad():  # each pair alone, in one batch of its two answers
        for i in range(len(pairs)):
            logps, _ = answer_logps(model, collate_pairs(pairs, [i], pad_id=0), "cpu", _token_loss(model))
            np.testing.assert_allclose(first.values[i], logps.double().numpy(), atol=1e-5)
    stored = list(cache.parent.glob("key.*.safetensors"))
    assert len(stored) == 1 and f"sha256:{stored[0].name.split('.')[1]}" == first.digest  # named by its bytes
    again = reference_logps(
        model, pairs, token_loss=_token_loss(model), cache_file=cache, pad_id=0, batch_size=2, dist=ONE
    )
    assert again.cached and again.digest == first.digest and np.array_equal(again.values, first.values)
    stored[0].write_bytes(stored[0].read_bytes()[:-8] + b"\0" * 8)  # a changed cache file is made again
    remade = reference_logps(
        model, pairs, token_loss=_token_loss(model), cache_file=cache, pad_id=0, batch_size=2, dist=ONE
    )
    assert not remade.cached and remade.digest == first.digest


def test_a_resumed_run_with_other_reference_numbers_is_refused():
    ref = Reference(np.zeros((2, 2)), "sha256:" + "a" * 64, cached=True)
    check_reference({"train": ref}, None, "step-000004")  # nothing pinned yet
    check_reference({"train": ref}, {"train": ref.pinned()}, "step-000004")
    with pytest.raises(InputChanged, match="step-000004: the reference log-probabilities of the train pairs are") as e:
        check_reference({"train": ref}, {"train": {"digest": "sha256:" + "b" * 64, "pairs": 2}}, "step-000004")
    assert e.value.exit_code == ExitCode.INPUT_CHANGED  # what `ftc run --resume` exits with
    assert "fix: resume with the ftc version, machine and settings the run started with, or start a new run" in str(
        e.value
    )


def test_nothing_is_cached_without_both_sides_token_caches_or_a_weights_digest(tmp_path):
    side = tmp_path / "tokens" / "x.safetensors"
    identity = {"weights": {"base_model": "sha256:" + "c" * 64}, "precision": "fp32"}
    assert reference_cache((side, None), identity) is None
    assert reference_cache((side, side), {**identity, "weights": {"base_model": None}}) is None
    a = reference_cache((side, side), identity)
    assert a is not None and a != reference_cache((side, side), {**identity, "precision": "bf16"})


_RANK_SCRIPT = """
import json, os, sys, torch, torch.distributed as td
from pathlib import Path
from transformers import AutoModelForCausalLM
sys.path[:0] = [sys.argv[3], str(Path(sys.argv[3]).parents[1])]  # this folder, and tests/ (support/)
from test_reference_logps import _pairs
from ftc.runtime.training.distributed import Dist
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.reference import reference_logps

td.init_process_group("gloo")
rank = int(os.environ["RANK"])
cache = Path(sys.argv[2]) / f"machine-{rank}" / "reference-logps" / "key.safetensors"  # each rank a machine's cache
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
found = reference_logps(
    model, _pairs(), token_loss=TokenLoss(model, zero_stage=0), cache_file=cache, pad_id=0, batch_size=2,
    dist=Dist(rank, rank, 2, "cpu"),
)
Path(sys.argv[2], f"rank-{rank}.json").write_text(json.dumps([found.cached, found.digest]))
td.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_whose_machines_caches_differ_all_compute_and_agree(tiny_model, tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from support.servers import free_ports

    # machine 0 holds the numbers from an earlier run (as a --resume after a crash finds them); machine 1 does not:
    # had rank 0 read them while rank 1 computed, rank 1's forwards and gathers would wait for rank 0 forever
    earlier = tmp_path / "earlier" / "reference-logps" / "key.safetensors"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    alone = reference_logps(
        model, _pairs(), token_loss=_token_loss(model), cache_file=earlier, pad_id=0, batch_size=2, dist=ONE
    )
    shutil.copytree(earlier.parent, tmp_path / "machine-0" / "reference-logps")
    (tmp_path / "rank.py").write_text(_RANK_SCRIPT)
    (port,) = free_ports(1)
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), str(tmp_path / "rank.py"), str(tiny_model), str(tmp_path),
         str(Path(__file__).parent)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    results = [json.loads((tmp_path / f"rank-{rank}.json").read_text()) for rank in (0, 1)]
    assert [cached for cached, _ in results] == [False, False]  # not every rank had them: every rank computed
    assert results[0][1] == results[1][1]
    assert alone.digest.startswith("sha256:")
