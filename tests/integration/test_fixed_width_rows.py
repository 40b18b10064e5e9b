"""``padding: max_length`` (llmforge's fixed widths) under ftc's varlen attention: every micro-batch as wide as its
rows padded to context_length, the padding in samples of its own, and the run trains exactly as without it."""

from __future__ import annotations

import pytest

from conftest import metrics


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
def test_fixed_widths_train_as_the_longest_padding_does(job, ftc, tmp_path, packed):
    losses, tokens = {}, {}
    for padding in ("longest", "max_length"):
        out = tmp_path / padding
        spec = job(name=f"{padding}.yaml", padding=padding, sample_packing=packed, output_dir=str(out))
        assert ftc("compile", spec, "-o", tmp_path / f"{padding}.json").code == 0
        r = ftc("run", tmp_path / f"{padding}.json")
        assert r.code == 0, r.err
        assert "sdpa_varlen attention" in r.err + r.out
        train = metrics(out, "train")
        losses[padding] = [m["loss"] for m in train] + [m["eval_loss"] for m in metrics(out, "eval")]
        tokens[padding] = [m["tokens"] for m in train]  # real tokens: padding is not counted
    assert losses["max_length"] == pytest.approx(losses["longest"], rel=1e-4)  # (fp32 sums of other shapes)
    assert tokens["max_length"] == tokens["longest"]
