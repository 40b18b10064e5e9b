"""The SVG drawings of ``ftc report``: loss curves as line charts (a long curve downsampled with LTTB, a point that
cannot be drawn a gap; ticks at round steps) and the lineage as a graph of boxes and arrows. Pure functions from
points and nodes to inline SVG; outside text in them is escaped for HTML."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ftc.spec.text import for_html

from .show import Node

__all__ = ["MAX_POINTS", "Band", "Point", "Series", "downsampled", "lineage_graph", "line_chart", "lttb"]

#: the most points a curve is drawn with: a longer one is downsampled (LTTB), keeping its shape
MAX_POINTS = 2000

#: a point of a curve: (step, value), or None where the curve has a gap
Point = tuple[float, float] | None


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    points: list[Point]
    dashed: bool = False  # an earlier stage of a chain: told apart from the latest in print too


@dataclass(frozen=True)
class Band:
    """A stage of a chain on the step axis: from ``start`` to ``end``, labelled at its top."""

    start: float
    end: float
    label: str


def _e(value: Any) -> str:
    """Text for the page: outside text (names, locations, values from records, plans and metrics) shown literally,
    its control characters escaped."""
    return for_html(str(value))


def lttb(points: list[tuple[float, float]], n: int) -> list[int]:
    """The indices of ``n`` of ``points`` (x ascending) that keep the curve's shape: Largest-Triangle-Three-Buckets
    (Steinarsson, 2013). The first and the last are kept; between them each of ``n - 2`` equal buckets gives the
    point that makes the largest triangle with the point kept before it and the mean of the next bucket, so a
    spike or a dip is kept. Every index when there are no more than ``n``."""
    size = len(points)
    if n >= size:
        return list(range(size))
    if n < 3:
        return [0, size - 1][:n]
    every = (size - 2) / (n - 2)
    kept = [0]
    for i in range(n - 2):
        start, end = int(i * every) + 1, int((i + 1) * every) + 1
        following = points[end : min(int((i + 2) * every) + 1, size)]
        mean_x = sum(p[0] for p in following) / len(following)
        mean_y = sum(p[1] for p in following) / len(following)
        ax, ay = points[kept[-1]]
        kept.append(
            max(
                range(start, end),
                key=lambda j: abs((ax - mean_x) * (points[j][1] - ay) - (ax - points[j][0]) * (mean_y - ay)),
            )
        )
    kept.append(size - 1)
    return kept


def downsampled(points: list[Point], n: int = MAX_POINTS) -> list[Point]:
    """At most ``n`` points of a curve (gaps kept where any lay between two points kept)."""
    drawn = [p for p in points if p is not None]
    if len(drawn) <= n:
        return points
    gap_before, gaps = [], 0
    for p in points:
        if p is None:
            gaps += 1
        else:
            gap_before.append(gaps)  # how many gaps came before this point
    out: list[Point] = []
    previous = None
    for i in lttb(drawn, n):
        if previous is not None and gap_before[i] != gap_before[previous]:
            out.append(None)
        out.append(drawn[i])
        previous = i
    return out


def line_chart(
    series: list[Series], *, width: int = 1000, height: int = 300, label: str, bands: list[Band] | None = None
) -> str:
    """A line chart of ``series`` (step -> value) as inline SVG, with axes and ticks; with ``bands``, the stages of a
    chain on one continued step axis, each shaded in turn, its start marked and its label at the top."""
    series = [Series(s.name, s.color, downsampled(s.points), s.dashed) for s in series]
    bands = bands or []
    points = [p for s in series for p in s.points if p is not None]
    if not points:
        return "<p class='warn'>No losses were recorded.</p>"
    left, right, top, bottom = 56, 16, 12 + (18 if bands else 0), 38
    xs = [p[0] for p in points] + [x for b in bands for x in (b.start, b.end)]
    x0, x1 = min(xs), max(xs)
    x1 = x1 if x1 > x0 else x0 + 1
    x_step = _round_step(x1 - x0, 5)
    if all(float(x).is_integer() for x in xs):
        x_step = max(x_step, 1.0)  # steps are whole: no tick between two of them
    y0, y1, y_step = _value_axis([p[1] for p in points])

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_e(label)}">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="#fbfcfd" '
        'stroke="#dde1e7"/>',
        *_bands(bands, sx, top, height - bottom),
    ]
    for y in _ticks(y0, y1, y_step):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eef0f3"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{_tick_text(y, y_step)}</text>')
    for x in _ticks(x0, x1, x_step):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 18}" text-anchor="middle">{_tick_text(x, x_step)}</text>')
    axis = "step, continued across the chain's stages" if bands else "step"
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 4}" text-anchor="middle">{axis}</text>')
    for s in series:
        parts += _curve(s, sx, sy)
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="swatch" style="background:{_swatch(s)}"></i>{_e(s.name)}</span>'
        for s in series
        if any(p is not None for p in s.points)
    )
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _swatch(s: Series) -> str:
    return f"repeating-linear-gradient(90deg,{s.color} 0 5px,transparent 5px 8px)" if s.dashed else s.color


def _bands(bands: list[Band], sx, top: float, bottom: float) -> list[str]:
    """Each stage shaded in turn, a dashed line where each after the first starts, its label above the frame."""
    parts = []
    for i, b in enumerate(bands):
        a, z = sx(b.start), sx(b.end)
        if i % 2:
            parts.append(f'<rect x="{a:.1f}" y="{top}" width="{z - a:.1f}" height="{bottom - top}" fill="#eef2f7"/>')
        if i:
            parts.append(f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{top - 16}" y2="{bottom}" stroke="#7a8494" '
                         'stroke-dasharray="4 3"/>')  # fmt: skip
        parts.append(f'<text x="{a + 4:.1f}" y="{top - 5}" style="font-weight:600">{_e(b.label)}</text>')
    return parts


def _curve(s: Series, sx, sy) -> list[str]:
    """A series as one path (a gap, None, starts a new stroke), with its points marked when there are few."""
    drawn = [p for p in s.points if p is not None]
    if not drawn:
        return []
    steps, move = [], True
    for p in s.points:
        if p is None:
            move = True
            continue
        steps.append(f"{'M' if move else 'L'}{sx(p[0]):.1f},{sy(p[1]):.1f}")
        move = False
    dash = ' stroke-dasharray="6 4"' if s.dashed else ""
    parts = [f'<path d="{" ".join(steps)}" fill="none" stroke="{s.color}" stroke-width="2"{dash}><title>'
             f"{_e(s.name)}</title></path>"]  # fmt: skip
    if len(drawn) <= 60:
        parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s.color}"/>' for x, y in drawn]
    return parts


def _value_axis(values: list[float]) -> tuple[float, float, float]:
    """(bottom, top, tick step) of the value axis: the values with a little room, widened to whole ticks. A loss
    starts its axis at 0 at the lowest; values below 0 (a reward, a log-probability) are drawn where they are; values
    that all lie between 0 and 1 (shares: exact match, accuracy) never get an axis past 1."""
    low, high = min(values), max(values)
    pad = (high - low) * 0.06 or 0.5
    bottom = max(0.0, low - pad) if low >= 0 else low - pad
    top = min(1.0, high + pad) if 0 <= low and high <= 1 else high + pad
    step = _round_step(top - bottom, 5)
    # 1 is a whole number of every step below it (1, 2 or 5 x 10^-k): widened, a share's axis still ends at 1
    return math.floor(bottom / step + 1e-9) * step, math.ceil(top / step - 1e-9) * step, step


def _round_step(span: float, parts: int) -> float:
    """The round step (1, 2 or 5 x 10^k) nearest to cutting ``span`` into ``parts`` parts (Heckbert's nice numbers,
    Graphics Gems, 1990): 24 steps in 5 parts is 5 a part, 52 is 10."""
    raw = span / parts
    power = 10.0 ** math.floor(math.log10(raw))
    return next((m for limit, m in ((1.5, 1), (3, 2), (7, 5)) if raw / power < limit), 10) * power


def _ticks(low: float, high: float, step: float) -> list[float]:
    """The multiples of ``step`` from ``low`` to ``high``."""
    return [k * step for k in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1)]


def _tick_text(value: float, step: float) -> str:
    """A tick's label with the decimals its step needs (0.5: one; 5: none)."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{round(value, decimals) + 0.0:.{decimals}f}"


#: a graph box's width and the characters a line of it holds (11px text; a bold name's widest letters included)
_BOX_W, _LINE_CHARS, _LINE_H, _MAX_NAME_LINES = 340, 46, 16, 3


def _wrapped(text: str, width: int = _LINE_CHARS, most: int = _MAX_NAME_LINES) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces (a longer word, a path, is cut), at most
    ``most`` lines: the last one ends in … when text is left over."""
    lines: list[str] = []
    for word in text.split(" "):
        while len(word) > width:
            room = width - len(lines[-1]) - 1 if lines and lines[-1] else 0
            if room > 8:  # fill the line's end with the word's start
                lines[-1], word = f"{lines[-1]} {word[:room]}", word[room:]
            else:
                lines.append(word[:width])
                word = word[width:]
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] = f"{lines[-1]} {word}" if lines[-1] else word
        else:
            lines.append(word)
    if len(lines) > most:
        lines = lines[:most]
        lines[-1] = lines[-1][: width - 1] + "…"
    return lines


def _box_lines(n: Node) -> tuple[list[str], list[str]]:
    """(the name's lines, the rest's) of a node's box: its name, its digest, its scores."""
    rest = [f"{(n.digest or 'unpinned')[:26]}…"]
    for score in n.scores():  # whole scores to a line, as many as fit
        if len(rest) > 1 and len(rest[-1]) + 3 + len(score) <= _LINE_CHARS:
            rest[-1] += f" · {score}"
        else:
            rest.append(score)
    return _wrapped(n.name), rest[:4]


def lineage_graph(nodes: list[Node]) -> str:
    """The lineage as an SVG graph: the checkpoint at the top, each parent below the node it is a parent of, an
    arrow labelled with the relation from parent to child; a shared parent is drawn once. A box holds its whole
    name (wrapped), its digest and its scores; the name also as the box's title."""
    drawn = [n for n in nodes if n.same_as is None]
    # a parent two checkpoints share sits below the deeper of them, so every arrow points up
    depth = {n.index: n.depth for n in drawn}
    for n in nodes:
        if n.same_as is not None:
            depth[n.same_as] = max(depth[n.same_as], n.depth)
    rows: dict[int, list[Node]] = {}
    for n in drawn:
        rows.setdefault(depth[n.index], []).append(n)
    rows = {i: rows[d] for i, d in enumerate(sorted(rows))}
    lines = {n.index: _box_lines(n) for n in drawn}
    tall = {n.index: 14 + _LINE_H * (len(lines[n.index][0]) + len(lines[n.index][1])) for n in drawn}
    box_w, gap_x, gap_y = _BOX_W, 30, 60
    side = 120  # room on the right for arrows that pass a row by
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x + side
    at: dict[int, tuple[float, float]] = {}
    row_of: dict[int, int] = {}
    y = 10
    for row_index, row in rows.items():
        span = len(row) * (box_w + gap_x) - gap_x
        for i, n in enumerate(row):
            at[n.index] = ((width - side - span) / 2 + i * (box_w + gap_x), y)
            row_of[n.index] = row_index
        y += max(tall[n.index] for n in row) + gap_y
    height = y - gap_y + 10
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" style="max-width:100%;height:auto" role="img" '
        'aria-label="lineage graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#7a8494"/></marker></defs>',
    ]
    for n in nodes:
        if n.parent_index is None:
            continue
        source = n.same_as if n.same_as is not None else n.index
        (sx, sy), (dx, dy) = at[source], at[n.parent_index]
        if row_of[source] - row_of[n.parent_index] > 1:  # past the rows between: around them, on the right
            x_a, y_a, x_b, y_b = sx + box_w, sy + tall[source] / 2, dx + box_w, dy + tall[n.parent_index] / 2
            bulge = max(x_a, x_b) + side * 0.8
            parts.append(
                f'<path d="M{x_a:.0f},{y_a:.0f} C{bulge:.0f},{y_a:.0f} {bulge:.0f},{y_b:.0f} '
                f'{x_b + 2:.0f},{y_b:.0f}" fill="none" stroke="#7a8494" marker-end="url(#arrow)"/>'
            )
            label_x, label_y = bulge - side * 0.2, (y_a + y_b) / 2
        else:
            x_a, y_a, x_b, y_b = sx + box_w / 2, sy, dx + box_w / 2, dy + tall[n.parent_index]
            parts.append(
                f'<line x1="{x_a:.0f}" y1="{y_a:.0f}" x2="{x_b:.0f}" y2="{y_b + 2:.0f}" stroke="#7a8494" '
                'marker-end="url(#arrow)"/>'
            )
            label_x, label_y = (x_a + x_b) / 2 + 6, (y_a + y_b) / 2 + 4
        parts.append(f'<text x="{label_x:.0f}" y="{label_y:.0f}">{_e(n.relation)}</text>')
    for n in drawn:
        x, y = at[n.index]
        fill = "#eef3ff" if n.parent_index is None else "#fff"
        name, rest = lines[n.index]
        parts.append(f'<g><title>{_e(n.name)}</title><rect x="{x}" y="{y}" width="{box_w}" height="{tall[n.index]}" '
                     f'rx="6" fill="{fill}" stroke="#9aa4b2"/>')  # fmt: skip
        bold = ' style="font-weight:600"'
        parts += [
            f'<text x="{x + 10}" y="{y + 20 + _LINE_H * i}"{bold if i < len(name) else ""}>{_e(line)}</text>'
            for i, line in enumerate(name + rest)
        ]
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
