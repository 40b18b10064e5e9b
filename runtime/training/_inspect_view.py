"""How ``ftc data inspect`` shows text, shared by its report of examples (``inspect``) and of preference pairs
(``inspect_pairs``): trained tokens marked, a histogram of lengths, and the warnings about the prompt format."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ftc.spec.text import for_terminal

from .render import PLACEHOLDER

_GREEN, _DIM, _RESET = "\x1b[1;32m", "\x1b[2m", "\x1b[0m"
#: the marks of trained text without colour, and between tokens: glyphs that prompt formats do not use (Llama Guard's
#: and Mistral's own [INST], [/INST] and <BEGIN ...> are plain brackets); where the data has one, it is shown escaped
OPEN, CLOSE, BOUNDARY = "\u27e6", "\u27e7", "\u00a6"  # ⟦ ⟧ ¦
_MARK_ESCAPES = str.maketrans({glyph: f"\\u{ord(glyph):04x}" for glyph in (OPEN, CLOSE, BOUNDARY)})

#: an example whose rendered text is longer is not tokenized for the statistics (16 MiB takes a minute or more)
TOKENIZED = 1 << 20


@dataclass(frozen=True)
class Marks:
    """How trained text is shown: colour on a terminal, ⟦ and ⟧ around it elsewhere; token boundaries (¦) on
    request. The marks are never text of the data: its control characters and these glyphs are shown escaped."""

    color: bool
    boundaries: bool

    def trained(self, text: str) -> str:
        return f"{_GREEN}{text}{_RESET}" if self.color else f"{OPEN}{text}{CLOSE}"

    def context(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.color else text

    def legend(self) -> str:
        """The line that says what the marks mean, above the examples."""
        trained = "trained text in green, the rest dimmed" if self.color else f"trained text {OPEN}between these{CLOSE}"
        between = f", a {BOUNDARY} between tokens" if self.boundaries else ""
        escaped = ", ".join(glyph.translate(_MARK_ESCAPES) for glyph in (OPEN, CLOSE, BOUNDARY))
        return (
            f"marks: {trained}{between}; in the data, control characters and {OPEN} {CLOSE} {BOUNDARY} are shown"
            f" escaped ({escaped})"
        )


def shown(text: str) -> str:
    """Text of the data as ``data inspect`` shows it: control characters escaped (line breaks kept), and the marks'
    glyphs too, so every mark on the screen is ftc's."""
    return for_terminal(text, newlines=True).translate(_MARK_ESCAPES)


def marked(text: str, offsets: list[tuple[int, int]], mask: np.ndarray, marks: Marks) -> str:
    """``text`` with each run of trained tokens marked; with ``boundaries``, a '¦' between tokens. Offsets past its
    end are cut there (``text`` may be the shown beginning of a longer one). Text of the data is :func:`shown`
    escaped: the marks are the only escape sequences and mark glyphs written."""
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
        run = [shown(piece) for piece, _ in pieces[i:j]]
        joined = BOUNDARY.join(run) if marks.boundaries else "".join(run)
        out.append(marks.trained(joined) if pieces[i][1] else marks.context(joined))
        i = j
    return "".join(out)


def histogram(lengths: np.ndarray, context_length: int, bins: int = 8, width: int = 40) -> list[str]:
    edges = [math.ceil(context_length * (i + 1) / bins) for i in range(bins)]
    counts, low = [], 0
    for high in edges:
        counts.append((f"{low + 1:>6}-{high:<6}", int(((lengths > low) & (lengths <= high)).sum())))
        low = high
    counts.append((f"{'>' + str(context_length):>13}", int((lengths > context_length).sum())))
    most = max(c for _, c in counts) or 1
    return [f"  {label} {'#' * math.ceil(width * c / most) if c else ''} {c}" for label, c in counts]


def template_warnings(fmt: Any, tokenizer: Any) -> list[str]:
    """What in the prompt format would train something else than serving expects."""
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
    return out


def untokenized_warning(untokenized: list, name: str, context_length: int) -> list[str]:
    """The warning that the statistics leave out examples too long to tokenize here (none: no warning)."""
    if not untokenized:
        return []
    first = ", ".join(f"{name}:{b.line}" for b in untokenized[:3])
    return [
        f"{len(untokenized)} example(s) of more than {TOKENIZED:,} characters rendered ({first}) were not "
        "tokenized here, so the statistics leave them out: a run tokenizes every example (and stops on those "
        f"longer than context_length {context_length}, or skips them with skip_bad_examples)"
    ]
