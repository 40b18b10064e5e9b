"""``ftc data inspect``: the training data exactly as a run will see it, rendered and tokenized by the same code
(through the same token cache), with the trained tokens marked, statistics over the whole file, and warnings about
what would train something else than serving expects.

Only the data and the tokenizer's files are fetched and verified, and only the tokenizer is loaded (no model, no
weights): it works on a laptop for any model size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ftc.errors import DataInvalid, UsageError
from ftc.spec.chat_data import read_examples
from ftc.spec.plan import Plan
from ftc.spec.tasks import TASKS
from ftc.spec.text import for_terminal

from ._inspect_view import TOKENIZED, Marks, histogram, marked, template_warnings, untokenized_warning
from .batches import epoch_rows
from .inputs import FoundInputs, verify_inputs
from .label_tokens import add_label_tokens
from .model import load_tokenizer, refuse_code_in_inputs
from .render import Rendered, renderer_for
from .sandbox import TemplateRefused
from .tokens import Examples, token_cache, tokenize_file, trained_mask

__all__ = ["inspect_data"]

#: examples rendered again to look at their token boundaries (the statistics cover every example)
_LOOK_AT = 200
#: characters of one example shown (the rest is counted: "... N more characters")
_SHOWN = 4096
#: an example longer than this is not tokenized whole to look at its answers' first tokens
_LOOKED_AT_WHOLE = 16 << 10


def inspect_data(plan: Plan, *, split: str = "train", n: int = 3, boundaries: bool = False, color: bool = False) -> str:
    """A report on the ``split`` data of ``plan``: ``n`` examples with their trained tokens marked, statistics over
    every example, and warnings. Raises :class:`UsageError` for a split the plan has no data for."""
    if split not in plan.inputs:
        raise UsageError(
            f"--split {split}: the plan has no {split} data (it has: train{', valid' * ('valid' in plan.inputs)})"
        )
    refuse_code_in_inputs(plan, {"base_model", "adapter"})
    paths = verify_inputs(plan, roles={"base_model", "adapter", split}, weights=False)  # data and tokenizer only
    report = _report(plan, paths, split, n, Marks(color=color, boundaries=boundaries))
    paths.check_unchanged()  # the report is of the bytes the plan pins
    return report


def _report(plan: Plan, paths: FoundInputs, split: str, n: int, marks: Marks) -> str:
    spec = plan.spec
    base = paths["base_model"]
    tokenizer, source = load_tokenizer(spec, base if isinstance(base, Path) else None, paths.get("adapter"))
    labels = spec.classifier_config.label_tokens if spec.classifier_config is not None else None
    add_label_tokens(tokenizer, labels or ())  # as the run adds them: the tokens it trains
    fmt = spec.generation_config.prompt_format
    render = renderer_for(fmt, tokenizer, when_needed=TASKS[spec.task].every_token)
    renderer_key = _renderer_key(fmt, tokenizer)
    tokenizer_input = {"base weights": plan.inputs["base_model"], "adapter": plan.inputs.get("adapter")}.get(source)
    name = for_terminal(plan.inputs[split].uri)
    header = [
        f"{split}: {name} (tokenizer from the {source}; {'prompt_format' if fmt else 'its chat template'})",
        f"task {spec.task}: {TASKS[spec.task].trains}",
        marks.legend(),
        "",
    ]
    if TASKS[spec.task].pairs:  # two conversations a line: shown and counted by the pair
        from .inspect_pairs import inspect_pairs

        reading = dict(
            tokenizer=tokenizer, tokenizer_input=tokenizer_input, render=render, renderer_key=renderer_key,
            before_store=paths.check_unchanged,
        )  # fmt: skip
        return "\n".join(header + inspect_pairs(plan, split, Path(paths[split]), n=n, marks=marks, **reading))
    cache = token_cache(plan.inputs[split], tokenizer_input, renderer_key, spec.task, labels)
    examples, bad = tokenize_file(
        Path(paths[split]), render=render, tokenizer=tokenizer, cache_file=cache, max_chars=TOKENIZED,
        task=spec.task, labels=labels, before_store=paths.check_unchanged,
    )  # fmt: skip
    untokenized = [b for b in bad if b.untokenized]
    bad = [b for b in bad if not b.untokenized]
    out = header
    index = {line: i for i, line in enumerate(examples.lines)}
    shown, looked, straddled = 0, 0, set()
    every_token = TASKS[spec.task].every_token
    for item in read_examples(Path(paths[split]), spec.task, labels):
        if looked >= _LOOK_AT:
            break
        if item.messages is None and item.text is None:
            continue
        try:
            rendered = render(item.messages) if item.text is None else Rendered(item.text, ((0, len(item.text)),))
        except TemplateRefused:
            raise
        except DataInvalid:
            continue  # a bad example: listed with its reason below
        text = rendered.text
        # the whole text only while it is short: a long one is looked at (and tokenized) as far as it is shown
        whole = len(text) <= _LOOKED_AT_WHOLE
        offsets = tokenizer(
            text if whole else text[: _SHOWN + 256], add_special_tokens=False, return_offsets_mapping=True
        )["offset_mapping"]
        if whole and not every_token:
            straddled |= _answer_prefixes(rendered, offsets)
        looked += 1
        if shown < n:
            mask = np.ones(len(offsets), bool) if every_token else trained_mask(offsets, rendered.loss_spans)[0]
            if labels is not None and whole and item.line in index:  # a classifier's: its label token (and categories)
                mask = examples.trainable[index[item.line]]
            out.append(f"--- {name}:{item.line} ({_counts(examples, index.get(item.line), len(text))})")
            out.append(marked(text[:_SHOWN], offsets, mask, marks))
            if len(text) > _SHOWN:
                out.append(marks.context(f"... {len(text) - _SHOWN:,} more characters"))
            out.append("")
            shown += 1
    out += _statistics(examples, bad, spec.context_length, spec.sample_packing, spec.seed)
    warnings = _warnings(fmt, tokenizer, examples, bad, spec.context_length, name, straddled)
    warnings += untokenized_warning(untokenized, name, spec.context_length)
    out += ["", *(f"warning: {w}" for w in warnings)] if warnings else ["", "no warnings"]
    return "\n".join(out)


def _counts(examples: Examples, i: int | None, chars: int) -> str:
    """An example's tokens and trained tokens as the statistics count them."""
    if i is None:
        return f"{chars:,} characters, not tokenized here"
    return f"{len(examples.ids[i])} tokens, {int(examples.trainable[i].sum())} trained"


def _renderer_key(fmt: Any, tokenizer: Any) -> Any:
    import dataclasses

    return dataclasses.asdict(fmt) if fmt is not None else ["chat_template", tokenizer.chat_template]


def _statistics(examples: Examples, bad: list, context_length: int, packing: bool, seed: int) -> list[str]:
    lengths = examples.lengths
    trained = np.fromiter((int(m.sum()) for m in examples.trainable), dtype=np.int64, count=len(examples))
    total = int(lengths.sum())
    out = [
        f"examples: {len(examples):,} ({len(bad)} bad)",
        f"tokens: {total:,}, trained {int(trained.sum()):,} ({100 * int(trained.sum()) / max(total, 1):.1f}%)",
    ]
    if len(examples):
        out.append(
            f"length: min {int(lengths.min())}, median {int(np.median(lengths))}, max {int(lengths.max())} "
            f"(context_length {context_length})"
        )
        out += histogram(lengths, context_length)
        fits = lengths[lengths <= context_length]
        if len(fits):
            rows = epoch_rows(fits, epoch=0, seed=seed, shuffle=False, pack_to=context_length)
            per_row = len(fits) / max(len(rows), 1)
            out.append(
                f"packing ({'on' if packing else 'off'}): {len(fits):,} examples would fill {len(rows):,} rows of "
                f"{context_length} tokens, {per_row:.1f} per row"
            )
    return out


def _answer_prefixes(rendered: Any, offsets: list[tuple[int, int]]) -> set[str]:
    """The template text that the token holding an assistant answer's first character begins with, for each answer
    whose first token begins before it (' safe' after a template's space): {' '} then."""
    found = set()
    for start, _ in rendered.loss_spans:
        for a, b in offsets:
            if a < start < b or (a < start and b > start):
                found.add(rendered.text[a:start])
                break
    return found


def _warnings(
    fmt: Any, tokenizer: Any, examples: Examples, bad: list, context_length: int, name: str, straddled: set[str]
) -> list[str]:
    out = template_warnings(fmt, tokenizer)
    clash = sorted(p for p in straddled if fmt is not None and p and fmt.trailing_assistant.endswith(p))
    if clash:
        out.append(
            f"the answers' first tokens begin with {clash[0]!r} from the template (' safe' is one token), and "
            f"trailing_assistant {fmt.trailing_assistant!r} ends with it: a prompt that ends there asks for a token "
            f"the model was not trained to produce; end trailing_assistant before {clash[0]!r}"
        )
    too_long = [line for line, n in zip(examples.lines, examples.lengths) if n > context_length]
    if too_long:
        first = ", ".join(f"{name}:{line}" for line in too_long[:3])
        out.append(
            f"{len(too_long)} example(s) longer than context_length {context_length} ({first}): a run stops on them "
            "(or skips them with skip_bad_examples)"
        )
    if bad:
        first = "; ".join(f"{name}:{b.line}: {for_terminal(b.reason)}" for b in bad[:3])
        out.append(f"{len(bad)} bad example(s), which a run stops on (or skips with skip_bad_examples): {first}")
    return out
