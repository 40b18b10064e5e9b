"""Chat templates rendered in ftc's own Jinja sandbox, with a budget.

A chat template comes with the weights: it is outside input, and Jinja is a language. transformers renders it in
Jinja's immutable sandbox (no attribute of Python's internals, no mutation), which stops escapes but not work: nested
``range(100000)`` loops, a string doubled in a loop, ``'x' * 10**10`` or a ``join`` with a huge separator run for
minutes or take all memory. Here the same template renders to exactly the same text (the environment, its filters,
globals and the template's inputs are transformers'), but every loop step, call, attribute access and piece of output
is counted against a budget of steps and seconds, and no value, output or argument may exceed a size: what exceeds it
stops the render with :class:`TemplateRefused` (exit 7), naming the template.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from ftc.errors import DataInvalid
from ftc.spec.text import for_terminal

__all__ = ["MAX_CHARS", "MAX_SECONDS", "MAX_STEPS", "TemplateRefused", "render_template"]

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
_WIDTH_METHODS = {"center", "ljust", "rjust", "zfill", "expandtabs"}
_WIDTH_FILTERS = {"center", "indent", "wordwrap", "batch", "slice", "truncate"}


class TemplateRefused(DataInvalid):
    """A chat template that exceeded its budget, or did what the sandbox forbids: the template is at fault, not one
    conversation, so a run stops on it (exit 7)."""


class _Exceeded(Exception):
    def __init__(self, why: str):
        super().__init__(why)


class _Budget:
    def __init__(self, steps: int = MAX_STEPS, seconds: float = MAX_SECONDS):
        self.left = steps
        self.steps = steps
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def step(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise _Exceeded(f"took more than {self.steps:,} steps (loop iterations, calls, lookups)")
        if self.left & 0x3FF == 0 or n > 1:
            self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Exceeded(f"ran longer than {self.seconds:g} s")


_BUDGET: ContextVar[_Budget | None] = ContextVar("ftc_template_budget", default=None)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # outside a render (Jinja folding constants while compiling): a fresh one
        budget = _Budget()
        _BUDGET.set(budget)
    return budget


def _sized(value: Any) -> Any:
    """``value``, once it is known not to exceed the size limits."""
    if isinstance(value, str):
        if len(value) > MAX_CHARS:
            raise _Exceeded(f"made a string of {len(value):,} characters (at most {MAX_CHARS:,})")
    elif isinstance(value, (list, tuple, dict)) and len(value) > MAX_ITEMS:
        raise _Exceeded(f"made a collection of {len(value):,} items (at most {MAX_ITEMS:,})")
    return value


def _at_most(chars: int, what: str, sequence: Any = "") -> None:
    """``chars`` characters, or items when ``sequence`` (what is repeated or joined) is a list or tuple."""
    if isinstance(sequence, (list, tuple)):
        if chars > MAX_ITEMS:
            raise _Exceeded(f"would make {what} of {chars:,} items (at most {MAX_ITEMS:,})")
    elif chars > MAX_CHARS:
        raise _Exceeded(f"would make {what} of {chars:,} characters (at most {MAX_CHARS:,})")


def _width(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_WIDTH:
        raise _Exceeded(f"passed {value:,} to {what} (at most {MAX_WIDTH:,})")


def _format_spec(text: Any, args: Iterable[Any], percent: bool) -> None:
    """A format string must not ask for huge widths, nor repeat long arguments past the size limit."""
    if not isinstance(text, str):
        return
    pattern = _BIG_PERCENT_SPEC if percent else _BIG_BRACE_SPEC
    if pattern.search(text):
        raise _Exceeded("asked for a format width or precision of a million characters or more")
    longest = max((len(a) for a in args if isinstance(a, str)), default=0)
    _at_most(len(text) + text.count("%" if percent else "{") * longest, "a formatted string")


def _join_size(items: list[Any], separator: Any) -> int:
    separator = separator if isinstance(separator, str) else str(separator)
    return sum(len(x) for x in items if isinstance(x, str)) + len(separator) * max(len(items) - 1, 0)


def _replace_size(text: Any, old: Any, new: Any, count: Any = None) -> int:
    if not (isinstance(text, str) and isinstance(old, str) and isinstance(new, str)):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def _int_size(left: Any, right: Any, operator: str) -> None:
    """Arithmetic on huge integers (``10 ** 10 ** 8``, a number squared in a loop) takes minutes: refused."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if operator == "**":
        bits = max(abs(left).bit_length() - 1, 0) * abs(right) if abs(right) > 64 else 0
    else:
        bits = abs(left).bit_length() + abs(right).bit_length()
    if bits > 1 << 16:
        raise _Exceeded(f"computed with an integer of about {bits:,} bits")


def _environment() -> Any:
    """transformers' chat-template environment (extensions, filters, globals: renders the same text), with every
    operation counted and sized."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes as nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.visitor import NodeTransformer

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` (transformers marks assistant text with it): its content."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_content"), [], [], body).set_lineno(lineno)

        def _content(self, caller: Callable[[], str]) -> str:
            return caller()

    class Counted(NodeTransformer):
        """Every for loop iterates through ``ftc_counted`` and every ``~`` joins through ``ftc_concat``: steps and
        sizes are counted where Jinja's generated code has no hook of its own."""

        def visit_For(self, node: Any) -> Any:
            self.generic_visit(node)
            node.iter = nodes.Filter(node.iter, "ftc_counted", [], [], None, None, lineno=node.lineno)
            return node

        def visit_Concat(self, node: Any) -> Any:
            self.generic_visit(node)
            items = nodes.List(node.nodes, lineno=node.lineno)
            return nodes.Filter(items, "ftc_concat", [], [], None, None, lineno=node.lineno)

    class Namespace(jinja2.utils.Namespace):
        # as transformers': no underscore-prefixed attributes; and every value stored is sized
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name, value in attrs.items():
                Namespace._check(name, value)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace._check(name, value)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any, value: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                    "Please rename the attribute."
                )
            _budget().step()
            _sized(value)

    class TemplateDict:
        # as transformers': dict() and dict.fromkeys() without the class itself
        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return _sized(dict(*args, **kwargs))

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return _sized(dict.fromkeys(*args, **kwargs))

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
            tree = super()._parse(source, name, filename)
            tree = Counted().visit(tree)
            tree.set_environment(self)
            return tree

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _budget().step()
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                        _at_most(len(seq) * max(times, 0), "a repeated string or list", seq)
            elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _at_most(len(left) + len(right), "a joined string or list", left)
            elif operator == "%" and isinstance(left, str):
                _format_spec(left, right if isinstance(right, (tuple, list)) else [right], percent=True)
            _int_size(left, right, operator)
            return _sized(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _budget().step()
            owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
            if isinstance(owner, str):
                if name in _WIDTH_METHODS:
                    for value in (*args, *kwargs.values()):
                        _width(value, f"str.{name}")
                elif name == "join" and args:
                    items = list(_counted(args[0]))
                    _at_most(_join_size(items, owner), "a joined string")
                    args = (items, *args[1:])
                elif name == "replace":
                    _at_most(_replace_size(owner, *args[:3]), "a replaced string")
            return _sized(super().call(__context, __obj, *args, **kwargs))

        def wrap_str_format(self, value: Any) -> Any:
            # str.format and str.format_map reach a template through here (the sandbox wraps them on access)
            wrapped = super().wrap_str_format(value)
            if wrapped is None:
                return None
            text = value.__self__

            def checked(*args: Any, **kwargs: Any) -> str:
                mapping = args[0].values() if args and isinstance(args[0], dict) else ()
                _format_spec(text, [*args, *kwargs.values(), *mapping], percent=False)
                return _sized(wrapped(*args, **kwargs))

            return checked

        def getattr(self, obj: Any, attribute: str) -> Any:
            _budget().step()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            _budget().step()
            return super().getitem(obj, argument)

    environment = Bounded(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols], optimized=False
    )
    environment.concat = _concat  # every output, a macro's and a block's too, is joined here

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
        _width(indent, "tojson")
        return _sized(
            json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        )

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    for name, function in list(environment.filters.items()):
        environment.filters[name] = _bounded_filter(name, function)
    environment.filters["tojson"] = tojson
    environment.filters["ftc_counted"] = _counted
    environment.filters["ftc_concat"] = _concat_values
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    environment.globals["dict"] = TemplateDict()
    environment.globals["namespace"] = Namespace
    environment.globals["range"] = _range
    environment.globals["lipsum"] = _bounded_lipsum(environment.globals["lipsum"])
    return environment


def _bounded_lipsum(lipsum: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja's ``lipsum(n, html, min, max)``: ``n`` paragraphs of ``min`` to ``max`` words, at most 100 of at most
    1,000 (``lipsum(n=1000000)`` made 448 million characters in two minutes before its size could be checked)."""

    def bounded(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        for value, limit, what in ((n, 100, "n"), (min, 1000, "min"), (max, 1000, "max")):
            if isinstance(value, int) and value > limit:
                raise _Exceeded(f"passed {what}={value:,} to lipsum (at most {limit:,})")
        return _sized(lipsum(n=n, html=html, min=min, max=max))

    return bounded


def _counted(iterable: Any) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _concat(pieces: Iterable[str]) -> str:
    budget, size, out = _budget(), 0, []
    for piece in pieces:
        budget.step()
        size += len(piece)
        _at_most(size, "an output")
        out.append(piece)
    return "".join(out)


def _concat_values(values: list[Any]) -> str:
    """``a ~ b ~ c`` (Jinja's str_join), each value sized before the next is added."""
    return _concat(str(v) for v in values)


def _range(*args: int) -> range:
    for value in args:
        _width(value, "range")
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise _Exceeded(f"asked for range() of {len(found):,} items (at most {MAX_RANGE:,})")
    _budget().step(len(found) // 16 + 1)
    return found


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a Jinja filter), counted, its arguments checked before it runs and its result sized after."""
    passes = getattr(function, "jinja_pass_arg", None) is not None

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _budget().step()
        head, (value, *rest) = (args[:1], args[1:]) if passes else ((), args)
        if name in _WIDTH_FILTERS:
            for argument in (*rest, *kwargs.values()):
                _width(argument if not isinstance(argument, str) else len(argument), f"the {name} filter")
        if name == "join":
            value = list(_counted(value))
            separator = rest[0] if rest else kwargs.get("d", "")
            _at_most(_join_size(value, separator), "a joined string")
        elif name == "replace":
            _at_most(_replace_size(value, *rest[:3]), "a replaced string")
        elif name == "format":
            _format_spec(value, [*rest, *kwargs.values()], percent=True)
        elif name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            width = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            _at_most(len(value) + (value.count("\n") + 1) * width, "an indented string")
        elif name == "wordwrap" and isinstance(value, str):
            wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
            width = rest[0] if rest else kwargs.get("width", 79)
            lines = len(value) // max(width if isinstance(width, int) else 1, 1) + 1
            _at_most(len(value) + lines * len(str(wrap)), "a wrapped string")
        return _sized(function(*head, value, *rest, **kwargs))

    return bounded


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Any:
    return _environment().from_string(template)


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as transformers gives it to a template: keys whose value is None dropped, a message's
    reasoning also under ``reasoning_content`` and ``thinking``."""
    out = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next(
            (message[k] for k in ("reasoning_content", "thinking", "reasoning") if message.get(k) is not None), None
        )
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def template_name(tokenizer: Any) -> str:
    return f"the chat template of {for_terminal(str(getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'))}"


def render_template(tokenizer: Any, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    """What ``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`` renders, within
    the budget. Raises :class:`TemplateRefused` for a template at fault (over budget, forbidden by the sandbox, not
    valid Jinja), :class:`DataInvalid` for a conversation the template refuses (its ``raise_exception``)."""
    import jinja2

    if not messages:
        raise DataInvalid(
            "an empty conversation: there is nothing to render (a conversation needs a turn before its answer)"
        )
    name = template_name(tokenizer)
    fix = "\n    fix: give generation_config.prompt_format, or use a tokenizer whose chat template you have read"
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one, as apply_chat_template takes it
        template = template.get("default")
    if not isinstance(template, str) or not template:
        raise TemplateRefused(f"{name.replace('the chat template of ', '', 1)} has no chat template{fix}")
    budget = _Budget()
    token = _BUDGET.set(budget)
    try:
        compiled = _compiled(template)
        values = {**tokenizer.special_tokens_map, "tools": None, "documents": None}
        return compiled.render(messages=_messages(messages), add_generation_prompt=add_generation_prompt, **values)
    except _Exceeded as exc:
        raise TemplateRefused(f"{name} {exc}: ftc stops a template there{fix}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateRefused(f"{name} did what the sandbox forbids: {for_terminal(str(exc))}{fix}") from None
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise TemplateRefused(f"{name} is not a valid Jinja template: {for_terminal(str(exc))}{fix}") from None
    except (RecursionError, MemoryError) as exc:
        why = "recursed too deep" if isinstance(exc, RecursionError) else "ran out of memory"
        raise TemplateRefused(f"{name} {why}{fix}") from None
    except jinja2.exceptions.TemplateError as exc:  # raise_exception: the template refuses this conversation
        raise DataInvalid(f"{name} refused this conversation: {for_terminal(str(exc))}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        raise DataInvalid(f"{name} failed on this conversation: {for_terminal(str(exc))}") from None
    finally:
        _BUDGET.reset(token)
