"""ftc's preference losses against TRL's: on one fixed batch of preference pairs, the DPO (``sigmoid``) and IPO
losses of ftc's training library (``collate_pairs``, ``answer_logps``, ``preference_loss``, the reference from
``reference_logps``) and their gradients equal those of TRL's ``DPOTrainer`` (its own collator and loss, on the same
weights and token ids), in fp32 on the CPU, for full fine-tuning and for LoRA.

Both sides start from the same weights, where the reference is taken: ftc's with one pass of the model before
training (for LoRA, the adapter at its init, B = 0), TRL's with a copy of the model (full fine-tuning) or the
adapter disabled (LoRA). Then every trainable weight moves by the same seeded nudge on both sides, so the policy
differs from its reference as it does once training has begun, and the loss and the gradient of every trainable
parameter are compared.

Tolerance: 1e-5, relative to the scale of what is compared: |ftc - TRL| <= 1e-5 * max(1, |TRL's loss|) for the
loss, and, for each parameter, max |ftc's grad - TRL's grad| <= 1e-5 * max(1, the largest |TRL grad| of any
trainable parameter). fp32 rounding alone leaves about 1e-7 of that scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftc.runtime.training.distributed import Dist
from ftc.runtime.training.loss import TokenLoss
from ftc.runtime.training.preference import Pairs, answer_logps, collate_pairs, preference_loss
from ftc.runtime.training.reference import reference_logps
from ftc.runtime.training.tokens import Examples

TOLERANCE = 1e-5
BETA = 0.5
CPU = torch.device("cpu")
#: (question, chosen answer, rejected answer): answers of different lengths, the longer one on either side
PAIRS = [
    ("What is 12 + 7?", "12 + 7 = 19", "21"),
    ("What is 3 + 40?", "43", "3 + 40 = 34, I think"),
    ("Add 5 and 5.", "10", "5 + 5 = 55"),
]


class OneProcess(Dist):
    """A run of one process without a process group: there is no one to wait for."""

    def barrier(self) -> None:
        pass


def token_rows(tokenizer) -> list[dict[str, list[int]]]:
    """Each pair as TRL's collator takes it: the prompt (the conversation up to the assistant's turn) and each final
    answer with the end of turn the template renders, the tokens ftc trains."""

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    return [
        {
            "prompt_ids": ids(f"<s><|user|>\n{question}</s>\n<|assistant|>\n"),
            "chosen_ids": ids(f"{chosen}</s>\n"),
            "rejected_ids": ids(f"{rejected}</s>\n"),
        }
        for question, chosen, rejected in PAIRS
    ]


def ftc_pairs(rows: list[dict[str, list[int]]]) -> Pairs:
    """The same token ids as ftc's ``Pairs``: each side the prompt then its answer, the answer alone trained."""

    def side(key: str) -> Examples:
        ids = [np.asarray(r["prompt_ids"] + r[key], dtype=np.int64) for r in rows]
        trained = [np.arange(len(i)) >= len(r["prompt_ids"]) for i, r in zip(ids, rows)]
        return Examples(ids, trained, list(range(len(rows))))

    return Pairs(side("chosen_ids"), side("rejected_ids"))


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def trl_trainer(model, ref_model, tokenizer, *, lora: bool, loss_type: str, out):
    """TRL's trainer for this loss, on the CPU in fp32 (TRL's default is bf16 mixed precision), reporting nowhere."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=str(out), beta=BETA, loss_type=loss_type, use_cpu=True, bf16=False, report_to=[], max_length=None,
        per_device_train_batch_size=len(PAIRS), seed=0, save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    # only lets the trainer be built: the batch compared goes through its collator and its loss directly
    dataset = Dataset.from_dict({"prompt": ["1 + 1 ="], "chosen": [" 2"], "rejected": [" 3"]})
    return DPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=lora_config() if lora else None,
    )  # fmt: skip


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_preference_loss_and_its_gradients_equal_trls_dpo_trainer(tiny_model, tmp_path, lora, loss_type):
    from peft import get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = token_rows(tokenizer)
    pairs, k = ftc_pairs(rows), len(rows)

    # ftc: the reference log-probabilities from the weights as training starts, as the dpo recipe takes them
    ours = get_peft_model(load(tiny_model), lora_config()) if lora else load(tiny_model)
    pad_id = tokenizer.pad_token_id
    token_loss = TokenLoss(ours, zero_stage=0)  # as the recipe takes them: chunked, without logits
    assert token_loss.chunked
    reference = reference_logps(
        ours, pairs, token_loss=token_loss, cache_file=None, pad_id=pad_id, batch_size=k, dist=OneProcess(0, 0, 1, CPU)
    ).values
    ours.train()

    # TRL, on the same weights: its LoRA adapter made the same as ours (B = 0 on both: the reference is the base)
    trainer = trl_trainer(
        load(tiny_model), None if lora else load(tiny_model), tokenizer, lora=lora, loss_type=loss_type, out=tmp_path
    )
    theirs = trainer.model
    mine, yours = trainable(ours), trainable(theirs)
    assert sorted(mine) == sorted(yours)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in mine.items():
            yours[name].copy_(p)
            step = 0.05 * torch.randn(p.shape, generator=noise)  # the same nudge off the reference on both sides
            p.add_(step)
            yours[name].add_(step)
    theirs_state = theirs.state_dict()
    assert all(torch.equal(v, theirs_state[n]) for n, v in ours.state_dict().items())

    # ftc: one step's loss as the recipe's _step weighs it (every pair the same), and its gradients
    batch = collate_pairs(pairs, list(range(k)), pad_id=pad_id)
    logps, tokens = answer_logps(ours, batch, CPU, token_loss)
    ref = torch.as_tensor(reference, dtype=torch.float32)
    losses, _, _ = preference_loss(
        (logps[:k], logps[k:]), (ref[:, 0], ref[:, 1]), (tokens[:k], tokens[k:]), beta=BETA, loss_type=loss_type
    )
    our_loss = losses.sum() * (1 / k)
    our_loss.backward()

    # TRL: the same token ids through its collator, then its loss (its own reference forward)
    inputs = trainer.data_collator(rows)
    assert torch.equal(inputs["input_ids"], batch.inputs["input_ids"])
    assert inputs["completion_mask"].sum(dim=1).tolist() == tokens.tolist()  # the same answer tokens counted
    theirs.train()
    their_loss = trainer.compute_loss(theirs, inputs)
    their_loss.backward()

    if loss_type == "sigmoid":  # the policy has moved off its reference: there is a loss to compare
        assert abs(their_loss.item() - math.log(2)) > 1e-3
    assert abs(our_loss.item() - their_loss.item()) <= TOLERANCE * max(1.0, abs(their_loss.item()))
    scale = max(1.0, max(p.grad.abs().max().item() for p in yours.values()))
    for name, p in mine.items():
        assert p.grad is not None and yours[name].grad is not None, name
        assert yours[name].grad.abs().max() > 0, f"{name}: no gradient to compare"
        worst = (p.grad - yours[name].grad).abs().max().item()
        assert worst <= TOLERANCE * scale, f"{name}: gradients differ by {worst:.3g} (scale {scale:.3g})"
