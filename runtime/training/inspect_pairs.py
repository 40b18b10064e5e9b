"""``ftc data inspect`` of preference pairs (task preference_tuning): each shown pair's prompt once, then its chosen
and its rejected final answer with their trained tokens marked (the final answer's span as the template renders it,
its end of turn with it), and statistics over every pair. Each side is tokenized as a run tokenizes it, through the
same token cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ftc.errors import DataInvalid
from ftc.spec.chat_data import PAIR_SIDES, read_preference_pairs
from ftc.spec.plan import Plan, PlanInput
from ftc.spec.text import for_terminal

from ._inspect_view import TOKENIZED, Marks, histogram, marked, template_warnings, untokenized_warning
from .sandbox import TemplateRefused
from .tokens import BadExample, Examples, token_cache, tokenize_file, trained_mask

__all__ = ["inspect_pairs"]

#: characters of a prompt, and of an answer, shown (the rest is counted)
_SHOWN = 4096


def inspect_pairs(
    plan: Plan,
    split: str,
    path: Path,
    *,
    tokenizer: Any,
    tokenizer_input: PlanInput | None,
    render: Any,
    renderer_key: Any,
    before_store: Any,
    n: int,
    marks: Marks,
) -> list[str]:
    """The report's lines after its header: ``n`` pairs of ``path`` shown, statistics over every pair (both sides
    tokenized as the run tokenizes them), and warnings."""
    spec = plan.spec
    sides: dict[str, Examples] = {}
    bad: dict[int, BadExample] = {}  # by line: a pair is bad when either side is
    for side in PAIR_SIDES:
        cache = token_cache(plan.inputs[split], tokenizer_input, renderer_key, spec.task, None, side)
        sides[side], side_bad = tokenize_file(
            path, render=render, tokenizer=tokenizer, cache_file=cache, max_chars=TOKENIZED, task=spec.task,
            side=side, before_store=before_store,
        )  # fmt: skip
        for item in side_bad:
            bad.setdefault(item.line, item)
    name = for_terminal(plan.inputs[split].uri)
    out = _shown(path, name, sides, n, render=render, tokenizer=tokenizer, marks=marks)
    untokenized = [b for b in bad.values() if b.untokenized]
    bad_pairs = [b for b in bad.values() if not b.untokenized]
    lengths = _pair_lengths(sides, set(bad))
    out += _statistics(sides, lengths, len(bad_pairs), spec.context_length)
    warnings = template_warnings(spec.generation_config.prompt_format, tokenizer)
    too_long = [line for line, length in lengths.items() if length > spec.context_length]
    if too_long:
        first = ", ".join(f"{name}:{line}" for line in too_long[:3])
        warnings.append(
            f"{len(too_long)} pair(s) with a side longer than context_length {spec.context_length} ({first}): a run "
            "stops on them (or skips them with skip_bad_examples)"
        )
    if bad_pairs:
        first = "; ".join(f"{name}:{b.line}: {for_terminal(b.reason)}" for b in bad_pairs[:3])
        warnings.append(
            f"{len(bad_pairs)} bad pair(s), which a run stops on (or skips with skip_bad_examples): {first}"
        )
    warnings += untokenized_warning(untokenized, name, spec.context_length)
    return out + (["", *(f"warning: {w}" for w in warnings)] if warnings else ["", "no warnings"])


def _shown(
    path: Path, name: str, sides: dict[str, Examples], n: int, *, render: Any, tokenizer: Any, marks: Marks
) -> list[str]:
    """The first ``n`` good pairs: the prompt once (the chosen side's text before its final answer, which the
    rejected side shares), then each side's final answer, its trained tokens marked."""
    index = {side: {line: i for i, line in enumerate(examples.lines)} for side, examples in sides.items()}
    out: list[str] = []
    for pair in read_preference_pairs(path):
        if len(out) >= n:
            break
        if pair.problem is not None or any(pair.line not in index[side] for side in PAIR_SIDES):
            continue
        try:
            rendered = {side: render(getattr(pair, side)) for side in PAIR_SIDES}
        except TemplateRefused:
            raise
        except DataInvalid:
            continue  # a bad pair: listed with its reason below
        counts = "; ".join(_counts(sides[side], index[side][pair.line], side) for side in PAIR_SIDES)
        lines = [f"--- {name}:{pair.line} ({counts})"]
        for side in PAIR_SIDES:
            text, spans = rendered[side].text, rendered[side].loss_spans[-1:]
            start = spans[0][0]
            encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            mask = trained_mask(encoded, spans)[0]
            if side == PAIR_SIDES[0]:  # the shared prompt, once
                lines.append(_clipped(marked(text[: min(start, _SHOWN)], encoded, mask, marks), start, marks))
            answer = [(max(a - start, 0), b - start) for a, b in encoded if b > start]
            kept = mask[[i for i, (_, b) in enumerate(encoded) if b > start]]
            shown = marked(text[start : start + _SHOWN], answer, kept, marks)
            lines.append(f"{side + ':':<10}" + _clipped(shown, len(text) - start, marks))
        out.append("\n".join(lines) + "\n")
    return out


def _clipped(shown: str, length: int, marks: Marks) -> str:
    """``shown`` (the first _SHOWN characters of a text ``length`` long), and how many more there are."""
    return shown + (marks.context(f"\n... {length - _SHOWN:,} more characters") if length > _SHOWN else "")


def _counts(examples: Examples, i: int, side: str) -> str:
    return f"{side} {len(examples.ids[i])} tokens, {int(examples.trainable[i].sum())} trained"


def _pair_lengths(sides: dict[str, Examples], bad: set[int]) -> dict[int, int]:
    """Each good pair's line -> the token count of its longer side (what must fit context_length)."""
    longest: dict[int, int] = {}
    for examples in sides.values():
        for line, length in zip(examples.lines, examples.lengths):
            if line not in bad:
                longest[line] = max(longest.get(line, 0), int(length))
    return longest


def _statistics(sides: dict[str, Examples], lengths: dict[int, int], bad: int, context_length: int) -> list[str]:
    totals = []
    for side in PAIR_SIDES:  # over the good pairs (a side of a bad pair may have tokenized)
        examples = sides[side]
        good = [i for i, line in enumerate(examples.lines) if line in lengths]
        total = sum(len(examples.ids[i]) for i in good)
        trained = sum(int(examples.trainable[i].sum()) for i in good)
        totals.append(f"{side} {total:,}, trained {trained:,} ({100 * trained / max(total, 1):.1f}%)")
    out = [f"pairs: {len(lengths):,} ({bad} bad)", "tokens: " + "; ".join(totals)]
    if lengths:
        longer = np.fromiter(lengths.values(), dtype=np.int64, count=len(lengths))
        out.append(
            f"length (a pair's longer side): min {int(longer.min())}, median {int(np.median(longer))}, max "
            f"{int(longer.max())} (context_length {context_length})"
        )
        out += histogram(longer, context_length)
    return out
