"""The report's line charts put their ticks at round steps (1, 2 or 5 x 10^k: 0, 5, 10, 15, 20 for 24 steps, not
0, 5, 10, 14, 19, 24), every point inside the frame, and a share's axis (exact match, accuracy) ends at 1 at most."""

from __future__ import annotations

import math
import re

import pytest

from ftc.lineage.report_charts import Series, line_chart


def _chart(points: list[tuple[float, float]], height: int = 300) -> str:
    return line_chart([Series("curve", "#1c7ed6", points)], height=height, label="curve")


def _steps(svg: str) -> list[str]:
    return [t for t in re.findall(r'text-anchor="middle">([^<]+)</text>', svg) if t != "step"]


def _values(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end">([^<]+)</text>', svg)


def _round(labels: list[str]) -> bool:
    """Evenly spaced by a step of 1, 2 or 5 x 10^k, each a multiple of it."""
    ticks = [float(t) for t in labels]
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    return (
        any(math.isclose(mantissa, m) for m in (1, 2, 5))
        and all(math.isclose(b - a, step) for a, b in zip(ticks, ticks[1:]))
        and all(math.isclose(t / step, round(t / step), abs_tol=1e-9) for t in ticks)
    )


def test_a_loss_chart_of_24_steps_has_ticks_every_5_steps():
    svg = _chart([(step, 2.0 / (1 + step)) for step in range(25)])
    assert _steps(svg) == ["0", "5", "10", "15", "20"]
    assert _values(svg) == ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]


@pytest.mark.parametrize(
    "points",
    [
        [(0, 0.325), (26, 0.27), (52, 0.23)],  # two stages' evaluations
        [(i, 3.0 / (1 + i / 500)) for i in range(0, 100_001, 50)],
        [(1, 1.7), (2, 1.69), (3, 1.72)],
        [(0, -12.3), (8, -0.5), (16, 3.0)],  # a rejected reward, a log-probability: below 0
        [(0.5, 0.4), (1.0, 0.35), (1.5, 0.3)],  # epochs
    ],
)
def test_every_tick_is_at_a_round_step_and_every_point_is_inside_the_frame(points):
    svg = _chart(points)
    assert _round(_steps(svg)) and _round(_values(svg)), (_steps(svg), _values(svg))
    top, bottom = 12, 300 - 34  # the frame's edges
    ys = [float(y) for y in re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', svg)]
    ys += [float(y) for y in re.findall(r"[ML][\d.]+,([\d.-]+)", svg)]
    assert ys and all(top <= y <= bottom for y in ys)
    low, high = min(p[1] for p in points), max(p[1] for p in points)
    assert float(_values(svg)[0]) <= low and float(_values(svg)[-1]) >= high


@pytest.mark.parametrize(
    "shares",
    [[0.0, 0.5, 1.0], [0.9, 1.0, 1.0], [1.0], [0.25, 0.5, 0.75], [0.0, 0.0]],
)
def test_a_shares_axis_never_runs_past_1(shares):
    svg = _chart([(8 * i, share) for i, share in enumerate(shares)], height=200)
    values = [float(t) for t in _values(svg)]
    assert max(values) <= 1.0 and _round(_values(svg))
    assert values[-1] >= max(shares)
    if max(shares) == 1.0:
        assert _values(svg)[-1] in ("1.0", "1.00")
