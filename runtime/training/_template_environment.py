"""transformers' chat-template Jinja environment, rebuilt so that it renders the same text (its extensions, filters
and globals) while every operation is counted and sized against the render's budget (``_template_limits``): loops
and ``~`` rewritten to pass through counters, binary operators, calls, lookups and ``str.format`` checked in the
sandbox, each filter wrapped, and ``range``, ``lipsum``, ``dict``, ``namespace`` and ``tojson`` bounded. Imported
only when a template is rendered (it imports Jinja)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes as nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from ._template_limits import (
    WIDTH_METHODS,
    at_most,
    bounded_filter,
    bounded_lipsum,
    bounded_range,
    check_width,
    concat,
    concat_values,
    counted,
    current_budget,
    format_spec,
    int_size,
    join_size,
    replace_size,
    sized,
)

__all__ = ["bounded_environment"]


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
        current_budget().step()
        sized(value)


class TemplateDict:
    # as transformers': dict() and dict.fromkeys() without the class itself
    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return sized(dict(*args, **kwargs))

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return sized(dict.fromkeys(*args, **kwargs))


class Bounded(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
        tree = super()._parse(source, name, filename)
        tree = Counted().visit(tree)
        tree.set_environment(self)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        current_budget().step()
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    at_most(len(seq) * max(times, 0), "a repeated string or list", seq)
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            at_most(len(left) + len(right), "a joined string or list", left)
        elif operator == "%" and isinstance(left, str):
            format_spec(left, right if isinstance(right, (tuple, list)) else [right], percent=True)
        int_size(left, right, operator)
        return sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        current_budget().step()
        owner, name = getattr(__obj, "__self__", None), getattr(__obj, "__name__", "")
        if isinstance(owner, str):
            if name in WIDTH_METHODS:
                for value in (*args, *kwargs.values()):
                    check_width(value, f"str.{name}")
            elif name == "join" and args:
                items = list(counted(args[0]))
                at_most(join_size(items, owner), "a joined string")
                args = (items, *args[1:])
            elif name == "replace":
                at_most(replace_size(owner, *args[:3]), "a replaced string")
        return sized(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Any:
        # str.format and str.format_map reach a template through here (the sandbox wraps them on access)
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        text = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            mapping = args[0].values() if args and isinstance(args[0], dict) else ()
            format_spec(text, [*args, *kwargs.values(), *mapping], percent=False)
            return sized(wrapped(*args, **kwargs))

        return checked

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_budget().step()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        current_budget().step()
        return super().getitem(obj, argument)


# the globals transformers gives a chat template (tojson with its width checked)


def raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False):
    check_width(indent, "tojson")
    return sized(json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys))


def strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def bounded_environment() -> Any:
    """transformers' chat-template environment (extensions, filters, globals: renders the same text), with every
    operation counted and sized."""
    environment = Bounded(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols], optimized=False
    )
    environment.concat = concat  # every output, a macro's and a block's too, is joined here

    for name, function in list(environment.filters.items()):
        environment.filters[name] = bounded_filter(name, function)
    environment.filters["tojson"] = tojson
    environment.filters["ftc_counted"] = counted
    environment.filters["ftc_concat"] = concat_values
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    environment.globals["dict"] = TemplateDict()
    environment.globals["namespace"] = Namespace
    environment.globals["range"] = bounded_range
    environment.globals["lipsum"] = bounded_lipsum(environment.globals["lipsum"])
    return environment
