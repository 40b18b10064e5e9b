"""A preference (DPO) step as the dpo recipe trains it, through a real single-process DeepSpeed engine: its
micro-batches collated a step ahead with their pairs' indices and reference log-probabilities, its loss the one the
pairs give (each answer's log-probability against its pair's reference), and the host waiting for the device only
once, when the loss is read."""

from __future__ import annotations

import functools
import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ftc.runtime.recipes.dpo import Run
from ftc.runtime.training.engine import build_engine
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.preference import (
    Pairs,
    answer_logps,
    collate_pairs,
    pair_batch,
    preference_loss,
    preference_step,
)
from ftc.runtime.training.step import Prefetched

from support.host_syncs import HostSyncs
from support.preference import token_pairs

#: fp32 on one process: the step's loss, read once at the end (``StepLoss.value``). Nothing else waits: the pair
#: and token counts are known when the pairs are collated (one process sums nothing across processes), the reference
#: log-probabilities come with the batch, torch's AdamW (fp32 on one process) checks nothing on the host
DESIGNED = {"item": 1}
SPEC = SimpleNamespace(learning_rate=1e-3, weight_decay=0.0, lr_scheduler_type="constant", num_warmup_steps=0)
DEEPSPEED = {
    "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
    "zero_optimization": {"stage": 0}, "managed_gradient_accumulation": False,  # as a plan's (every step() updates)
}  # fmt: skip
#: a step's micro-batches of pairs (rows of one pair each, as epoch_steps gives them), out of order on purpose
STEP = [[(5,), (2,)], [(7,), (0,), (3,)]]
BETA = 0.5


@pytest.fixture(scope="module")
def pairs() -> Pairs:
    """Eight pairs of a prompt and two answers of other lengths (so their batches are padded)."""
    return token_pairs(8, seed=3)


#: every pair's reference log-probabilities, far apart: a pair scored against another pair's would change the loss
REFERENCE = np.random.default_rng(5).normal(-30.0, 8.0, size=(8, 2))


def _engine(tiny_model):
    from transformers import AutoModelForCausalLM

    from ftc.runtime.training.attention import register

    register()  # the attention the recipe loads on CPUs (attention_for's auto)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="sdpa_varlen")
    return build_engine(model, SPEC, DEEPSPEED, precision="fp32", total_steps=10, world=1)


def _token_loss(engine) -> TokenLoss:
    """As the recipe takes the answers' log-probabilities: chunked, for this Llama on ZeRO stage 0."""
    token_loss = TokenLoss(engine.module, zero_stage=0)
    assert token_loss.chunked
    return token_loss


def _collate(pairs, micro_rows):
    """As the recipe collates a step (``Run.collate_step``)."""
    return [pair_batch(pairs, [i for (i,) in rows], REFERENCE, pad_id=0) for rows in micro_rows]


def _expected_loss(engine, pairs, micro_rows, loss_type) -> float:
    """The step's loss as the recipe computed it before its micro-batches were collated ahead: each micro-batch
    collated when trained, its reference looked up by its pairs' indices, the losses summed over the step's pairs."""
    total, count = 0.0, 0
    with torch.no_grad():
        for rows in micro_rows:
            indices = [row[0] for row in rows]
            logps, tokens = answer_logps(engine, collate_pairs(pairs, indices, pad_id=0), "cpu", _token_loss(engine))
            k = len(indices)
            ref = torch.as_tensor(REFERENCE[indices], dtype=torch.float32)
            losses, _, _ = preference_loss(
                (logps[:k], logps[k:]), (ref[:, 0], ref[:, 1]), (tokens[:k], tokens[k:]), beta=BETA,
                loss_type=loss_type,
            )  # fmt: skip
            total += float(losses.double().sum())
            count += k
    return total / count


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_a_step_waits_for_the_device_once_and_its_loss_is_the_pairs(single_process, tiny_model, pairs, loss_type):
    engine = _engine(tiny_model)
    losses = []
    for _ in range(3):  # every step the same: nothing waited for once and cached
        expected = _expected_loss(engine, pairs, STEP, loss_type)
        micro = _collate(pairs, STEP)
        with HostSyncs() as syncs:
            loss = preference_step(
                engine, micro, single_process, token_loss=_token_loss(engine), beta=BETA, loss_type=loss_type
            )
            losses.append(loss.value(single_process))
        assert dict(syncs.calls) == DESIGNED
        assert losses[-1] == pytest.approx(expected, rel=1e-5)
        trained = [i for rows in STEP for (i,) in rows]
        assert loss.count == len(trained) == 5  # the loss is a mean over the step's pairs
        assert loss.real_tokens == sum(len(pairs.chosen.ids[i]) + len(pairs.rejected.ids[i]) for i in trained)
    assert losses[2] < losses[0]  # it trains


class FirstUses(TorchFunctionMode):
    """The first call made on each of ``tensors`` (host tensors) while active: its name and its ``non_blocking``.
    Only the first: on a CPU a copy to the device is the tensor itself, which the step then computes with."""

    def __init__(self, tensors: list[Any]) -> None:
        super().__init__()
        self.tensors: list[Any] = tensors
        self.uses: dict[int, tuple[str, bool]] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        for i, t in enumerate(self.tensors):
            if args and args[0] is t and i not in self.uses:
                self.uses[i] = (getattr(func, "__name__", ""), kwargs.get("non_blocking", False))
        return func(*args, **kwargs)


def test_a_step_copies_its_collated_batches_to_the_device_queued(single_process, tiny_model, pairs):
    engine = _engine(tiny_model)
    micro = _collate(pairs, STEP)
    host = [t for m in micro for t in (*m.batch.inputs.values(), m.batch.labels, m.reference)]
    assert all(isinstance(t, torch.Tensor) for t in host)
    with FirstUses(host) as seen:
        preference_step(engine, micro, single_process, token_loss=_token_loss(engine), beta=BETA, loss_type="sigmoid")
    # each tensor is first copied, queued (on a GPU, from the pinned memory Prefetched puts it in): nothing is sliced
    # or looked up on the host, nor copied while the host waits
    assert seen.uses == {i: ("to", True) for i in range(len(host))}


def test_the_recipe_collates_each_step_ahead_with_its_pairs_and_their_reference(single_process, pairs):
    steps = [STEP, [[(1,), (4,)], [(6,)]]]
    run = SimpleNamespace(
        data={"train": pairs}, references={"train": SimpleNamespace(values=REFERENCE)},
        tokenizer=SimpleNamespace(pad_token_id=0), pad_to=None, dist=single_process, epoch_steps=lambda epoch: steps,
    )  # fmt: skip
    threads = []
    collate_step = functools.partial(Run.collate_step, run)
    run.collate_step = lambda rows: threads.append(threading.current_thread().name) or collate_step(rows)
    batches = Run.epoch_batches(run, 0)
    assert isinstance(batches, Prefetched) and not batches.pin  # pinned on CUDA only
    for step, micro_rows in enumerate(steps):
        collated = batches[step]
        assert [m.pairs for m in collated] == [[i for (i,) in rows] for rows in micro_rows]
        for m in collated:
            expected = collate_pairs(pairs, m.pairs, pad_id=0)
            assert torch.equal(m.batch.inputs["input_ids"], expected.inputs["input_ids"])
            assert torch.equal(m.batch.labels, expected.labels)
            assert m.reference.dtype == torch.float32
            assert torch.equal(m.reference, torch.as_tensor(REFERENCE[m.pairs], dtype=torch.float32))
    assert threads[0] == threading.current_thread().name and threads[1].startswith("ftc-collate")
