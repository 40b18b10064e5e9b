"""The budget of one chat-template render, and the checks that hold a template to it: every loop step, call,
attribute access and piece of output counted against steps and seconds, and no value, output or argument over its
size (a string, a collection, a width, an integer, a ``range()``, a ``lipsum()``). What exceeds it raises
:class:`Exceeded`, which the renderer (``sandbox``) turns into the error a user sees. The Jinja environment that calls
these checks is ``_template_environment``."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

#: the most characters of any string a template makes, its output included (twice the longest data line)
MAX_CHARS = 32 << 20
#: the most items of a list, tuple or dict a template makes, and of one range()
MAX_ITEMS = 1_000_000
MAX_RANGE = 100_000  # what Jinja's own sandbox allows
#: loop steps, calls, attribute lookups and output pieces of one render
MAX_STEPS = 2_000_000
#: seconds one render may take
MAX_SECONDS = 10.0
#: the largest width (center, ljust, indent, ...) or count a template may pass
MAX_WIDTH = 1 << 20

#: a width or precision in a %-format or a {}-format: 7 digits or more, or given by an argument
_BIG_PERCENT_SPEC = re.compile(r"%[-#0 +]*(?:\*|\d{7,}|\.\*|\.\d{7,}|\d*\.(?:\*|\d{7,}))")
_BIG_BRACE_SPEC = re.compile(r"\{[^{}]*:[^{}]*(?:\d{7,}|\{)")
#: str methods whose int arguments are widths
WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
WIDTH_FILTERS = {"center", "indent", "wordwrap", "batch", "slice", "truncate"}


class Exceeded(Exception):
    """A template went over its budget or a size limit (the reason is the message)."""

    def __init__(self, why: str):
        super().__init__(why)


class Budget:
    """The steps and the deadline left to one render."""

    def __init__(self, steps: int = MAX_STEPS, seconds: float = MAX_SECONDS):
        self.left = steps
        self.steps = steps
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def step(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise Exceeded(f"took more than {self.steps:,} steps (loop iterations, calls, lookups)")
        if self.left & 0x3FF == 0 or n > 1:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Exceeded(f"ran longer than {self.seconds:g} s")


BUDGET: ContextVar[Budget | None] = ContextVar("ftc_template_budget", default=None)


def current_budget() -> Budget:
    budget = BUDGET.get()
    if budget is None:  # outside a render (Jinja folding constants while compiling): a fresh one
        budget = Budget()
        BUDGET.set(budget)
    return budget


def sized(value: Any) -> Any:
    """``value``, once it is known not to exceed the size limits."""
    if isinstance(value, str):
        if len(value) > MAX_CHARS:
            raise Exceeded(f"made a string of {len(value):,} characters (at most {MAX_CHARS:,})")
    elif isinstance(value, (list, tuple, dict)) and len(value) > MAX_ITEMS:
        raise Exceeded(f"made a collection of {len(value):,} items (at most {MAX_ITEMS:,})")
    return value


def at_most(chars: int, what: str, sequence: Any = "") -> None:
    """``chars`` characters, or items when ``sequence`` (what is repeated or joined) is a list or tuple."""
    if isinstance(sequence, (list, tuple)):
        if chars > MAX_ITEMS:
            raise Exceeded(f"would make {what} of {chars:,} items (at most {MAX_ITEMS:,})")
    elif chars > MAX_CHARS:
        raise Exceeded(f"would make {what} of {chars:,} characters (at most {MAX_CHARS:,})")


def check_width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        raise Exceeded(f"passed {value:,} to {what} (at most {MAX_WIDTH:,})")


def format_spec(text: Any, args: Iterable[Any], percent: bool) -> None:
    """A format string must not ask for huge widths, nor repeat long arguments past the size limit."""
    if not isinstance(text, str):
        return
    pattern = _BIG_PERCENT_SPEC if percent else _BIG_BRACE_SPEC
    if pattern.search(text):
        raise Exceeded("asked for a format width or precision of a million characters or more")
    longest = max((len(a) for a in args if isinstance(a, str)), default=0)
    at_most(len(text) + text.count("%" if percent else "{") * longest, "a formatted string")


def join_size(items: list[Any], separator: Any) -> int:
    separator = separator if isinstance(separator, str) else str(separator)
    return sum(len(x) for x in items if isinstance(x, str)) + len(separator) * max(len(items) - 1, 0)


def replace_size(text: Any, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def int_size(left: Any, right: Any, operator: str) -> None:
    """Arithmetic on huge integers (``10 ** 10 ** 8``, a number squared in a loop) takes minutes: refused."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if operator == "**":
        bits = max(abs(left).bit_length() - 1, 0) * abs(right) if abs(right) > 64 else 0
    else:
        bits = abs(left).bit_length() + abs(right).bit_length()
    if bits > 1 << 16:
        raise Exceeded(f"computed with an integer of about {bits:,} bits")


def bounded_lipsum(lipsum: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's ``lipsum(n, html, min, max)``: ``n`` paragraphs of ``min`` to ``max`` words, at most 100 of at most
    1,000 (``lipsum(n=1000000)`` made 448 million characters in two minutes before its size could be checked)."""

    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        for value, limit, what in ((n, 100, "n"), (min, 1000, "min"), (max, 1000, "max")):
            if isinstance(value, int) and value > limit:
                raise Exceeded(f"passed {what}={value:,} to lipsum (at most {limit:,})")
        return sized(lipsum(n=n, html=html, min=min, max=max))

    return bounded


def counted(iterable: Any) -> Iterator[Any]:
    budget = current_budget()
    for item in iterable:
        budget.step()
        yield item


def concat(pieces: Iterable[str]) -> str:
    budget, size, out = current_budget(), 0, []
    for piece in pieces:
        budget.step()
        size += len(piece)
        at_most(size, "an output")
        out.append(piece)
    return "".join(out)


def concat_values(values: list[Any]) -> str:
    """``a ~ b ~ c`` (Jinja's str_join), each value sized before the next is added."""
    return concat(str(v) for v in values)


def bounded_range(*args: int) -> range:
    for value in args:
        check_width(value, "range")
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise Exceeded(f"asked for range() of {len(found):,} items (at most {MAX_RANGE:,})")
    current_budget().step(len(found) // 16 + 1)
    return found


def bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a Jinja filter), counted, its arguments checked before it runs and its result sized after."""
    passes = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        current_budget().step()
        head, (value, *rest) = (args[:1], args[1:]) if passes else ((), args)
        if name in WIDTH_FILTERS:
            for argument in (*rest, *kwargs.values()):
                check_width(argument if not isinstance(argument, str) else len(argument), f"the {name} filter")
        if name == "join":
            value = list(counted(value))
            separator = rest[0] if rest else kwargs.get("d", "")
            at_most(join_size(value, separator), "a joined string")
        elif name == "replace":
            at_most(replace_size(value, *rest[:3]), "a replaced string")
        elif name == "format":
            format_spec(value, [*rest, *kwargs.values()], percent=True)
        elif name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            at_most(len(value) + (value.count("\n") + 1) * width, "an indented string")
        elif name == "wordwrap" and isinstance(value, str):
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
            width = rest[0] if rest else kwargs.get("width", 79)
            lines = len(value) // max(width if isinstance(width, int) else 1, 1) + 1
            at_most(len(value) + lines * len(str(wrap)), "a wrapped string")
        return sized(function(*head, value, *rest, **kwargs))

    return bounded
