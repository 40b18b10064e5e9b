"""``ftc data inspect``: the training data exactly as a run will see it, rendered and tokenized by the same code
(through the same token cache), with the trained tokens marked, statistics over the whole file, and warnings about
what would train something else than serving expects.

Only the data and the tokenizer's files are fetched and verified, and only the tokenizer is loaded (no model, no
weights): it works on a laptop for any model size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ftc.errors import DataInvalid, UsageError
from ftc.spec.chat_data import read_examples
from ftc.spec.plan import Plan
from ftc.spec.tasks import TASKS
from ftc.spec.text import for_terminal

from .batches import epoch_rows
from .inputs import verify_inputs
from .label_tokens import add_label_tokens
from .model import load_tokenizer, refuse_code_in_inputs
from .render import PLACEHOLDER, Rendered, renderer_for
from .sandbox import TemplateRefused
from .tokens import Examples, token_cache, tokenize_file, trained_mask

__all__ = ["inspect_data"]

_GREEN, _DIM, _RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"

#: examples rendered again to look at their token boundaries (the statistics cover every example)
_LOOK_AT = 200
#: characters of one example shown (the rest is counted: "... N more characters")
_SHOWN = 4096
#: an example longer than this is not tokenized whole to look at its answers' first tokens
_LOOKED_AT_WHOLE = 16 << 10
#: an example whose rendered text is longer is not tokenized for the statistics (16 MiB takes a minute or more)
_TOKENIZED = 1 << 20


@dataclass(frozen=True)
class _Marks:
    """How trained text is shown: colour on a terminal, brackets elsewhere; token boundaries on request."""

    color: bool
    boundaries: bool

    def trained(self, text: str) -> str:
        return f"{_GREEN}{text}{_RESET}" if self.color else f"[{text}]"

    def context(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.color else text


def inspect_data(plan: Plan, *, split: str = "train", n: int = 3, boundaries: bool = False, color: bool = False) -> str:
    """A report on the ``split`` data of ``plan``: ``n`` examples with their trained tokens marked, statistics over
    every example, and warnings. Raises :class:`UsageError` for a split the plan has no data for."""
    if split not in plan.inputs:
        raise UsageError(
            f"--split {split}: the plan has no {split} data (it has: train{', valid' * ('valid' in plan.inputs)})"
        )
    refuse_code_in_inputs(plan, {"base_model", "adapter"})
    paths = verify_inputs(plan, roles={"base_model", "adapter", split}, weights=False)  # data and tokenizer only
    spec = plan.spec
    base = paths["base_model"]
    tokenizer, source = load_tokenizer(spec, base if isinstance(base, Path) else None, paths.get("adapter"))
    labels = spec.classifier_config.label_tokens if spec.classifier_config is not None else None
    add_label_tokens(tokenizer, labels or ())  # as the run adds them: the tokens it trains
    fmt = spec.generation_config.prompt_format
    render = renderer_for(fmt, tokenizer, when_needed=TASKS[spec.task].every_token)
    renderer_key = _renderer_key(fmt, tokenizer)
    tokenizer_input = {"base weights": plan.inputs["base_model"], "adapter": plan.inputs.get("adapter")}.get(source)
    cache = token_cache(plan.inputs[split], tokenizer_input, renderer_key, spec.task, labels)
    examples, bad = tokenize_file(
        Path(paths[split]), render=render, tokenizer=tokenizer, cache_file=cache, max_chars=_TOKENIZED,
        task=spec.task, labels=labels,
    )  # fmt: skip
    untokenized = [b for b in bad if b.untokenized]
    bad = [b for b in bad if not b.untokenized]
    marks = _Marks(color=color, boundaries=boundaries)
    name = for_terminal(plan.inputs[split].uri)
    out = [
        f"{split}: {name} (tokenizer from the {source}; {'prompt_format' if fmt else 'its chat template'})",
        f"task {spec.task}: {TASKS[spec.task].trains}",
        "",
    ]
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
            out.append(_marked(text[:_SHOWN], offsets, mask, marks))
            if len(text) > _SHOWN:
                out.append(marks.context(f"... {len(text) - _SHOWN:,} more characters"))
            out.append("")
            shown += 1
    out += _statistics(examples, bad, spec.context_length, spec.sample_packing, spec.seed)
    warnings = _warnings(fmt, tokenizer, examples, bad, spec.context_length, name, straddled)
    if untokenized:
        first = ", ".join(f"{name}:{b.line}" for b in untokenized[:3])
        warnings.append(
            f"{len(untokenized)} example(s) of more than {_TOKENIZED:,} characters rendered ({first}) were not "
            "tokenized here, so the statistics leave them out: a run tokenizes every example (and stops on those "
            f"longer than context_length {spec.context_length}, or skips them with skip_bad_examples)"
        )
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


def _marked(text: str, offsets: list[tuple[int, int]], mask: np.ndarray, marks: _Marks) -> str:
    """``text`` with each run of trained tokens marked; with ``boundaries``, a '|' between tokens. Offsets past its
    end are cut there (``text`` may be the shown beginning of a longer one). Control characters in the text are
    shown escaped (line breaks kept): the marks are the only escape sequences written."""
    pieces: list[tuple[str, bool]] = []  # each token's text (with any untokenized text before it), trained or not
    cursor = 0
    for (_, end), trained in zip(offsets, mask):
        end = min(end, len(text))
        if end > cursor:
            pieces.append((text[cursor:end], bool(trained)))
            cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], False))
    out, i = [], 0
    while i < len(pieces):
        j = i
        while j < len(pieces) and pieces[j][1] == pieces[i][1]:
            j += 1
        run = [for_terminal(piece, newlines=True) for piece, _ in pieces[i:j]]
        joined = "|".join(run) if marks.boundaries else "".join(run)
        out.append(marks.trained(joined) if pieces[i][1] else marks.context(joined))
        i = j
    return "".join(out)


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
        out += _histogram(lengths, context_length)
        fits = lengths[lengths <= context_length]
        if len(fits):
            rows = epoch_rows(fits, epoch=0, seed=seed, shuffle=False, pack_to=context_length)
            per_row = len(fits) / max(len(rows), 1)
            out.append(
                f"packing ({'on' if packing else 'off'}): {len(fits):,} examples would fill {len(rows):,} rows of "
                f"{context_length} tokens, {per_row:.1f} per row"
            )
    return out


def _histogram(lengths: np.ndarray, context_length: int, bins: int = 8, width: int = 40) -> list[str]:
    edges = [math.ceil(context_length * (i + 1) / bins) for i in range(bins)]
    counts, low = [], 0
    for high in edges:
        counts.append((f"{low + 1:>6}-{high:<6}", int(((lengths > low) & (lengths <= high)).sum())))
        low = high
    counts.append((f"{'>' + str(context_length):>13}", int((lengths > context_length).sum())))
    most = max(c for _, c in counts) or 1
    return [f"  {label} {'#' * math.ceil(width * c / most) if c else ''} {c}" for label, c in counts]


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
    out = []
    if fmt is not None and not fmt.assistant.split(PLACEHOLDER, 1)[-1]:
        out.append(
            "the assistant template has no end-of-turn text after {instruction}: the model never learns to stop "
            f"(add the tokenizer's end of turn, e.g. {tokenizer.eos_token!r}, after it)"
        )
    if fmt is not None and fmt.bos and tokenizer.bos_token and fmt.bos.startswith(tokenizer.bos_token):
        ids = tokenizer("x")["input_ids"]
        if ids and ids[0] == tokenizer.bos_token_id:
            out.append(
                f"prompt_format.bos is {fmt.bos!r} and the tokenizer adds {tokenizer.bos_token!r} itself when it "
                "encodes: a server that encodes the rendered prompt with special tokens sends two (ftc trains on "
                "one); encode prompts without special tokens, or set bos to ''"
            )
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
