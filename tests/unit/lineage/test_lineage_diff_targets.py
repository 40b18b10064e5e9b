"""``ftc lineage diff`` compares LoRA targets by the modules they reach in each plan's architecture: a stage 2 that
inherited the modules stage 1's all-linear resolved to, or names the same modules in another order, is the same."""

from __future__ import annotations

from ftc.lineage.diff import TARGETS, _targets_line

LLAMA = {"model_id": "tiny", "source": "checkpoint", "config": {"model_type": "llama", "num_hidden_layers": 2}}
ALL = sorted(
    f"model.layers.{i}.{block}.{leaf}"
    for i in range(2)
    for block, leaves in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj",
                                                                                              "down_proj")))
    for leaf in leaves
)  # fmt: skip


def test_all_linear_and_the_modules_it_resolved_to_are_the_same():
    line, same = _targets_line("all-linear", LLAMA, ALL, LLAMA)
    assert same
    assert line == (
        f'{TARGETS}: the same 14 modules in both ("all-linear" in a, a list of 14 names in b, resolved in each '
        "plan's architecture)"
    )


def test_short_names_in_another_order_are_the_same_and_a_real_change_says_what_changed():
    short = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    line, same = _targets_line(short, LLAMA, sorted(short), LLAMA)
    assert same and "the same 14 modules in both" in line and "as written" in line
    line, same = _targets_line("all-linear", LLAMA, ["q_proj", "v_proj"], LLAMA)
    assert not same
    assert line.startswith(f'{TARGETS}: "all-linear" -> ["q_proj", "v_proj"] (14 modules -> 4: only a\'s reach ')
    assert "model.layers.0.mlp.down_proj" in line and "only b's" not in line


def test_targets_of_an_architecture_ftc_does_not_know_are_compared_as_written():
    unknown = {"model_id": "x", "source": "checkpoint", "config": {"model_type": "gpt2", "num_hidden_layers": 2}}
    line, same = _targets_line("all-linear", unknown, ["c_attn"], unknown)
    assert not same and line == f'{TARGETS}: "all-linear" -> ["c_attn"]'
    line, same = _targets_line("(", LLAMA, ["q_proj"], LLAMA)  # not a regular expression
    assert not same and line == f'{TARGETS}: "(" -> ["q_proj"]'


def test_a_checkpoints_plan_cannot_make_diff_run_a_regular_expression_or_build_billions_of_names():
    # new: a regular expression of ten nested groups took 74 s over a two-layer model's names; a plan is outside
    # input, so a regular expression is compared as written, never run, and so is a layout of absurd depth
    slow = "(?:[a-z.0-9_]*)" * 10 + "X"
    line, same = _targets_line(slow, LLAMA, ["q_proj"], LLAMA)
    assert not same and line == f'{TARGETS}: "{slow}" -> ["q_proj"]'
    deep = {**LLAMA, "config": {"model_type": "llama", "num_hidden_layers": 10**9}}
    line, same = _targets_line("all-linear", deep, ["q_proj"], deep)
    assert not same and line == f'{TARGETS}: "all-linear" -> ["q_proj"]'
