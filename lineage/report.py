"""``ftc report``: one self-contained HTML page of a run and its ancestry, for people. No scripts, fonts or images
from anywhere: the loss curves and the lineage graph are inline SVG, the style is inline CSS (printable). Built
from the checkpoint's verified lineage record, the plan it carries and the run's metrics.jsonl where it is beside it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.spec.reading import MiB, NotFinite, NotReadable, finite_json, read_bounded_text, regular_file_problem
from ftc.spec.text import for_html, redact

from .record import REPRODUCTION_FILE, reproduction_of
from .show import Node, _resolved, chain, source_name
from .trusted_keys import trusted_keys_from_env
from .verify import _Signatures, verify_checkpoint

__all__ = ["MAX_POINTS", "lttb", "report_html"]

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2430; margin: 0;
       background: #f6f7f9; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.sub { color: #5b6574; margin-bottom: 16px; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: 16px 20px; margin-top: 16px; }
table { border-collapse: collapse; width: 100%; } td, th { text-align: left; padding: 4px 8px; vertical-align: top;
       border-bottom: 1px solid #eef0f3; } th { color: #5b6574; font-weight: 600; width: 26%; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px;
       overflow-wrap: anywhere; }
.ok { color: #17723b; font-weight: 600; } .bad { color: #b42318; font-weight: 600; } .warn { color: #9a6700; }
.legend span { margin-right: 18px; } .swatch { display: inline-block; width: 18px; height: 3px;
       vertical-align: middle; margin-right: 6px; }
svg text { font: 11px system-ui, sans-serif; fill: #3b4452; }
@media print { body { background: #fff; } section { break-inside: avoid; border-color: #bbb; } main { padding: 0; } }
"""

_TRAIN, _EVAL = "#3867d6", "#e8590c"


#: the most points a curve is drawn with: a longer one is downsampled (LTTB), keeping its shape
MAX_POINTS = 2000
#: how much of metrics.jsonl the page reads (the start of a longer one: the page says so)
METRICS_LIMIT = 32 * MiB
#: a metrics line longer than this is not one ftc wrote: it is skipped, unread
LINE_LIMIT = 64 * 1024
#: the largest step or value drawn: beyond it (or NaN, infinite) a point is a gap in its curve
PLOTTABLE = 1e15

#: the most lineage nodes the page draws and lists
MAX_NODES = 200

#: a point of a curve: (step, value), or None where the curve has a gap
Point = tuple[float, float] | None


@dataclass(frozen=True)
class _Series:
    name: str
    color: str
    points: list[Point]


def _e(value: Any) -> str:
    """Text for the page: outside text (names, locations, values from records, plans and metrics) shown literally,
    its control characters escaped."""
    return for_html(str(value))


def _plottable(value: Any) -> float | None:
    """``value`` as a coordinate, or None where it cannot be drawn (not a number, NaN, infinite, huge)."""
    if type(value) is float:
        return value if -PLOTTABLE <= value <= PLOTTABLE else None  # NaN compares false
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and not -PLOTTABLE <= value <= PLOTTABLE:
        return None
    value = float(value)
    return value if math.isfinite(value) and abs(value) <= PLOTTABLE else None


def _point(step: Any, value: Any) -> Point:
    x, y = _plottable(step), _plottable(value)
    return None if x is None or y is None else (x, y)


#: metrics lines as JSON, NaN and infinities read as floats: they are gaps, not unreadable lines
_LENIENT = json.JSONDecoder(parse_constant=float)


def _run_metrics(folder: Path, step: int) -> tuple[list[Point], str | None]:
    """The train losses of the run the checkpoint belongs to (its metrics.jsonl, up to the checkpoint's step), when
    the checkpoint is still in its run's folder: read line by line, at most :data:`METRICS_LIMIT` bytes; a torn or
    foreign line is skipped, a train line whose step or loss cannot be drawn is a gap. With a note for the page
    when not all of it was read."""
    path = folder.parent.parent / "metrics.jsonl"
    if folder.parent.name != "checkpoints":
        return [], None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    except OSError:  # none, or not readable: the curve is an extra, the page is made without it
        return [], None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if regular_file_problem(path, st) is not None:
            return [], None
        points: list[Point] = []
        read = skipped = 0
        while read < METRICS_LIMIT:
            line = f.readline(LINE_LIMIT + 1)
            if not line:
                break
            read += len(line)
            if len(line) > LINE_LIMIT and not line.endswith(b"\n"):  # skip the rest of it, a chunk at a time
                skipped += 1
                rest = b""
                while read < METRICS_LIMIT and (rest := f.readline(LINE_LIMIT)) and not rest.endswith(b"\n"):
                    read += len(rest)  # a line with no end (a sparse file) stops at the read limit too
                read += len(rest) if rest.endswith(b"\n") else 0
                continue
            if b'"train"' not in line:  # an eval or summary line: not parsed
                continue
            try:
                record = _LENIENT.decode(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                continue
            if not isinstance(record, dict) or record.get("type") != "train":
                continue
            at = record.get("step")
            if isinstance(at, int) and not isinstance(at, bool) and at > step:
                continue
            points.append(_point(at, record.get("loss")))
    notes = []
    if read >= METRICS_LIMIT and st.st_size > read:
        notes.append(f"the first {read // MiB} MiB of its {st.st_size / MiB:.0f} MiB were read")
    if skipped:
        notes.append(f"{skipped} line(s) longer than {LINE_LIMIT // 1024} KiB skipped")
    return points, "; ".join(notes) or None


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


def _downsampled(points: list[Point], n: int = MAX_POINTS) -> list[Point]:
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


def _chart(series: list[_Series], *, width: int = 1000, height: int = 300, label: str) -> str:
    """A line chart of ``series`` (step -> loss) as inline SVG, with axes and ticks."""
    series = [_Series(s.name, s.color, _downsampled(s.points)) for s in series]
    points = [p for s in series for p in s.points if p is not None]
    if not points:
        return "<p class='warn'>No losses were recorded.</p>"
    left, right, top, bottom = 56, 16, 12, 34
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    x1 = x1 if x1 > x0 else x0 + 1
    pad = (y1 - y0) * 0.06 or 0.5
    y0, y1 = max(0.0, y0 - pad), y1 + pad

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (height - top - bottom)

    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{_e(label)}">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="#fbfcfd" '
        'stroke="#dde1e7"/>',
    ]
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eef0f3"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{sx(x):.1f}" y="{height - 14}" text-anchor="middle">{x:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 1}" text-anchor="middle">step</text>')
    for s in series:
        drawn = [p for p in s.points if p is not None]
        if not drawn:
            continue
        steps, move = [], True
        for p in s.points:  # a gap (None) starts a new stroke
            if p is None:
                move = True
                continue
            steps.append(f"{'M' if move else 'L'}{sx(p[0]):.1f},{sy(p[1]):.1f}")
            move = False
        parts.append(f'<path d="{" ".join(steps)}" fill="none" stroke="{s.color}" stroke-width="2"><title>'
                     f"{_e(s.name)}</title></path>")  # fmt: skip
        if len(drawn) <= 60:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s.color}"/>' for x, y in drawn]
    parts.append("</svg>")
    legend = "".join(
        f'<span><i class="swatch" style="background:{s.color}"></i>{_e(s.name)}</span>'
        for s in series
        if any(p is not None for p in s.points)
    )
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _status(folder: Path, nodes: list[Node], node: Node, problems: list[str]) -> tuple[str, str]:
    """(css class, words) for whether ``node``'s files were found and re-hashed here."""
    if node.parent_index is not None and node.location is None:  # published weights by name, or a store's folder
        return "warn", "not a local folder (published weights, or a store's): its record entry was checked"
    where = str(folder) if node.parent_index is None else _resolved(folder, nodes, node)
    if node.parent_index is not None and not os.path.exists(where):
        return "warn", f"not on this machine ({where}); its record was checked"
    if any(p.startswith((f"{where}/", f"{where}:")) or f" {where}/" in p for p in problems):
        return "bad", f"changed ({where})"
    return "ok", "verified: every file re-hashed" if node.parent_index is None else f"re-hashed at {where}"


def _graph(nodes: list[Node]) -> str:
    """The lineage as an SVG graph: the checkpoint at the top, each parent below the node it is a parent of, an
    arrow labelled with the relation from parent to child; a shared parent is drawn once."""
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
    box_w, box_h, gap_x, gap_y = 300, 58, 30, 60
    side = 120  # room on the right for arrows that pass a row by
    width = max(len(r) for r in rows.values()) * (box_w + gap_x) + gap_x + side
    height = len(rows) * (box_h + gap_y) + 10
    at: dict[int, tuple[float, float]] = {}
    row_of: dict[int, int] = {}
    for row_index, row in rows.items():
        span = len(row) * (box_w + gap_x) - gap_x
        for i, n in enumerate(row):
            at[n.index] = ((width - side - span) / 2 + i * (box_w + gap_x), 10 + row_index * (box_h + gap_y))
            row_of[n.index] = row_index
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
            x_a, y_a, x_b, y_b = sx + box_w, sy + box_h / 2, dx + box_w, dy + box_h / 2
            bulge = max(x_a, x_b) + side * 0.8
            parts.append(
                f'<path d="M{x_a:.0f},{y_a:.0f} C{bulge:.0f},{y_a:.0f} {bulge:.0f},{y_b:.0f} '
                f'{x_b + 2:.0f},{y_b:.0f}" fill="none" stroke="#7a8494" marker-end="url(#arrow)"/>'
            )
            label_x, label_y = bulge - side * 0.2, (y_a + y_b) / 2
        else:
            x_a, y_a, x_b, y_b = sx + box_w / 2, sy, dx + box_w / 2, dy + box_h
            parts.append(
                f'<line x1="{x_a:.0f}" y1="{y_a:.0f}" x2="{x_b:.0f}" y2="{y_b + 2:.0f}" stroke="#7a8494" '
                'marker-end="url(#arrow)"/>'
            )
            label_x, label_y = (x_a + x_b) / 2 + 6, (y_a + y_b) / 2 + 4
        parts.append(f'<text x="{label_x:.0f}" y="{label_y:.0f}">{_e(n.relation)}</text>')
    for n in drawn:
        x, y = at[n.index]
        fill = "#eef3ff" if n.parent_index is None else "#fff"
        loss = f" · eval loss {n.eval_loss:.4f}" if n.eval_loss is not None else ""
        title = n.name if len(n.name) <= 44 else n.name[:43] + "…"
        parts += [
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="{fill}" stroke="#9aa4b2"/>',
            f'<text x="{x + 10}" y="{y + 20}" style="font-weight:600">{_e(title)}</text>',
            f'<text x="{x + 10}" y="{y + 38}">{_e((n.digest or "unpinned")[:26])}…{_e(loss)}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest else "unpinned"


def _rows(pairs: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def _tracker(folder: Path) -> list[tuple[str, Any]]:
    """Where the run is in its experiment tracker (summary.json of the run the checkpoint is in), as text: the page
    links to nothing."""
    path = folder.parent.parent / "summary.json"
    if folder.parent.name != "checkpoints" or not path.is_file():
        return []
    try:
        tracker = finite_json(read_bounded_text(path, limit=16 * MiB, what="summary")).get("tracker")
    except (NotReadable, ValueError, NotFinite, RecursionError, AttributeError):
        return []
    if not isinstance(tracker, dict):
        return []
    where = redact(str(tracker.get("url") or tracker.get("dir") or ""))
    return [("tracker", f"{_e(tracker.get('provider', ''))} run <code>{_e(tracker.get('run_id', ''))}</code> "
                        f"<code>{_e(where)}</code>")]  # fmt: skip


def _settings(folder: Path) -> list[tuple[str, Any]]:
    path = folder / "plan.json"
    if not path.is_file():
        return [("plan", "not carried by this checkpoint")]
    try:
        spec = finite_json(read_bounded_text(path, limit=256 * MiB, what="plan")).get("spec", {})
    except (ValueError, NotFinite, RecursionError):
        return [("plan", "unreadable")]
    keys = ["model_id", "num_epochs", "learning_rate", "lr_scheduler_type", "num_warmup_steps",
            "train_batch_size_per_device", "gradient_accumulation_steps", "context_length", "training_mode",
            "lora_config", "precision", "deepspeed", "num_devices", "num_nodes", "seed", "evaluation"]  # fmt: skip
    return [(k, f"<code>{_e(json.dumps(spec[k]))}</code>") for k in keys if k in spec]


def _reproduction(folder: Path, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """A reproduction's status: what it reproduces, and the verdict `ftc reproduce` wrote beside its checkpoints."""
    found = reproduction_of(folder, record)
    if found is None:
        return []
    origin, verdict = found
    rows = [("reproduction of", f"<code>{_e(source_name(origin['source']))}</code> record "
                                f"<code>{_e(origin.get('record_id', '—'))}</code>")]  # fmt: skip
    if verdict is None:
        return [*rows, ("reproduction", "no verdict beside it (the run did not finish, or its report was moved)")]
    css = "ok" if verdict in ("bitwise reproduced", "numerically reproduced") else "bad"
    return [*rows, ("reproduction", f'<span class="{css}">{_e(verdict)}</span> ({REPRODUCTION_FILE})')]


def report_html(folder: Path) -> str:
    """The report of the checkpoint in ``folder`` (its chain verified as ``ftc lineage verify`` does)."""
    folder = folder.resolve()
    signatures = _Signatures(trusted_keys_from_env())  # each checkpoint of the chain: signed, unsigned or broken
    record, problems = verify_checkpoint(folder, signatures=signatures)
    if record is None:
        raise ValueError("\n".join(problems))
    nodes = chain(record)
    if len(nodes) > MAX_NODES:  # a record may name thousands of parents: the page shows the first, and says so
        more = (
            f"<p class='warn'>{len(nodes) - MAX_NODES} more node(s) not shown: `ftc lineage show` lists them all.</p>"
        )
        nodes = nodes[:MAX_NODES]  # depth first: every node shown has the node it is a parent of shown too
    else:
        more = ""
    checkpoint = record["checkpoint"]
    trained = record.get("results") is not None
    results = record.get("results", {})
    evals = results.get("evals", [])
    train_points, metrics_note = _run_metrics(folder, results.get("step", 0))
    # where the train curve comes from: metrics.jsonl is beside the checkpoint, not in it, and no record covers it
    if any(p is not None for p in train_points):
        source = "from the run's metrics.jsonl, which the lineage record does not cover (not verified)"
        if metrics_note:
            source += f"; {metrics_note}"
    else:
        train_points = [_point(e["step"], e.get("train_loss")) for e in evals if e.get("train_loss") is not None]
        source = "from the lineage record (its evaluations), verified with it" if train_points else "none recorded"
    eval_points = [_point(e["step"], e["eval_loss"]) for e in evals if e.get("eval_loss") is not None]
    curves = (
        _chart(
            [_Series("train loss", _TRAIN, train_points), _Series("eval loss", _EVAL, eval_points)],
            label="train and eval loss",
        )
        + f"<p class='warn'>Training curve: {_e(source)}. Eval losses: from the lineage record.</p>"
    )
    matches = [_point(e["step"], e["exact_match"]) for e in evals if e.get("exact_match") is not None]
    match_chart = (
        "<h2>Exact match</h2>" + _chart([_Series("exact match", "#2b8a3e", matches)], height=200, label="exact match")
        if matches
        else ""
    )
    verdict = (
        '<span class="ok">verified</span>: every file and every record of the chain that is on this machine'
        if not problems
        else '<span class="bad">does not verify</span>:<ul>'
        + "".join(f"<li class='mono'>{_e(p)}</li>" for p in problems)
        + "</ul>"
    ) + "".join(f"<br>signature of {_e(name)}: {_e(state.describe())}" for name, state in signatures.found)
    ancestry = []
    for n in nodes:
        css, words = _status(folder, nodes, n, problems)
        if n.same_as is not None:
            words = f"the same as node {n.same_as} (shown once)"
            css = "ok"
        ancestry.append(
            "<tr>"
            f"<td>{'&nbsp;' * 4 * n.depth}{_e(n.relation + ': ' if n.relation else '')}<b>{_e(n.name)}</b></td>"
            f"<td class='mono'><span title='{_e(n.digest or '')}'>{_e(_short(n.digest))}</span><br>"
            f"record <span title='{_e(n.record_id or '')}'>{_e(_short(n.record_id) if n.record_id else 'none')}</span>"
            "</td>"
            f"<td>{'<br>'.join(_e(d) for d in n.data) or '—'}</td>"
            f"<td>{f'{n.eval_loss:.4f}' if n.eval_loss is not None else '—'}</td>"
            f"<td class='{css}'>{_e(words)}</td></tr>"
        )
    parents = [
        (f"{p['role'].replace('_', ' ')} ({p['relation']})",
         f"<code>{_e(source_name(p['source']))}</code> "
         f"({_e(p['source']['source'])}) pinned <code>{_e(p.get('digest') or 'unpinned')}</code>")
        for p in record["parents"][:MAX_NODES]
    ] + [
        (f"{d['role']} data", f"<code>{_e(source_name(d['source']))}</code> "
         f"<code>{_e(d['sha256'])}</code>, {d['examples_used']} examples used, {d['examples_skipped']} skipped")
        for d in record.get("datasets", [])[:MAX_NODES]
    ]  # fmt: skip
    hidden = len(record["parents"]) + len(record.get("datasets", [])) - len(parents)
    if hidden:
        parents.append(("more", f"{hidden} more not shown: `ftc lineage show` lists them all"))
    env = record["environment"]
    image = env.get("image")
    environment = [
        ("python", _e(env["python"])), ("platform", _e(env["platform"])),
        *[(name, _e(version or "not installed")) for name, version in sorted(env["packages"].items())],
        ("all packages", f"<code>{_e(env['packages_digest'])}</code>"),
        ("image", _e(f"{image.get('requested', image['ref'])} ({image.get('id', '')})" if image else
                     "none: the run used the local Python environment")),
    ]  # fmt: skip
    execution = record.get("execution", {})
    wall = record.get("measured", {}).get("wall_time_s", results.get("wall_time_s"))
    run_rows = [
        ("status", _e(results.get("status", "an export"))),
        ("steps", _e(f"{results.get('step', '—')} of {results.get('total_steps', '—')}")),
        ("tokens trained", _e(f"{results['tokens_trained']:,}" if trained else "—")),
        ("final eval loss", _e(f"{results['eval_loss']:.4f}" if results.get("eval_loss") is not None else "—")),
        ("wall time", _e(f"{wall:.1f} s" if isinstance(wall, (int, float)) else "—")),
        ("topology", _e(f"{execution.get('world_size', '—')} process(es) on {execution.get('device', '—')}, "
                        f"{execution.get('precision', '—')}, ZeRO {execution.get('zero_stage', '—')}")),
        ("plan", f"<code>{_e(record.get('plan', {}).get('plan_id', '—'))}</code>"),
        ("record", f"<code>{_e(record['record_id'])}</code>"),
        *_reproduction(folder, record),
        *_tracker(folder),
    ]  # fmt: skip
    title = f"{checkpoint['model_id']} · {checkpoint['name']} ({checkpoint['kind']})"
    body = f"""<main>
<h1>{_e(title)}</h1>
<div class="sub">ftc run report · {_e(folder)} · lineage {verdict}<br>training curve: {_e(source)}</div>
<section><h2>Losses</h2>{curves}{match_chart}</section>
<section><h2>Lineage</h2>{more}{_graph(nodes)}
<table><tr><th>node</th><th>digest</th><th>data</th><th>eval loss</th><th>here</th></tr>{"".join(ancestry)}</table>
</section>
<section><h2>Run</h2>{_rows(run_rows)}</section>
<section><h2>Pinned inputs</h2>{_rows(parents)}</section>
<section><h2>Settings</h2>{_rows(_settings(folder))}</section>
<section><h2>Environment</h2>{_rows(environment)}</section>
</main>"""
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
