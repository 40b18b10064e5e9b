"""``ftc report``: one self-contained HTML page of a run and its ancestry, for people. No scripts, fonts or images
from anywhere: the loss curves and the lineage graph are inline SVG (``report_charts``), the style is inline CSS
(printable). Built from the checkpoint's verified lineage record, the plan it carries and the run's metrics.jsonl
where it is beside it (``report_metrics``). This module lays out the page: its sections and their rows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftc.spec.reading import MiB, NotFinite, NotReadable, finite_json, read_bounded_text
from ftc.spec.text import for_html, redact

from .record import REPRODUCTION_FILE, reproduction_of
from .report_charts import line_chart, lineage_graph
from .report_classifier import classifier_section
from .report_preference import preference_section
from .report_stages import Stage, chain_stages, eval_curves, stage_bands, stages_note, train_curves
from .show import Node, _resolved, chain, source_name
from .trusted_keys import trusted_keys_from_env
from .verify import _Signatures, verify_checkpoint

__all__ = ["report_html"]

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
.nowrap { white-space: nowrap; }
.legend span { margin-right: 18px; } .swatch { display: inline-block; width: 18px; height: 3px;
       vertical-align: middle; margin-right: 6px; }
svg text { font: 11px system-ui, sans-serif; fill: #3b4452; }
@media print { body { background: #fff; } section { break-inside: avoid; border-color: #bbb; } main { padding: 0; } }
"""

_TRAIN, _EVAL = "#3867d6", "#e8590c"


#: the most lineage nodes the page draws and lists
MAX_NODES = 200


def _e(value: Any) -> str:
    """Text for the page: outside text (names, locations, values from records, plans and metrics) shown literally,
    its control characters escaped."""
    return for_html(str(value))


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


def report_html(folder: Path, *, shown: str | None = None) -> str:
    """The report of the checkpoint in ``folder`` (its chain verified as ``ftc lineage verify`` does), named as
    ``shown`` (a store's URI for a fetched copy; default: the folder)."""
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
    losses, source = _losses(*chain_stages(folder, record))
    verdict = _verdict(problems) + "".join(
        f"<br>signature of {_e(name)}: {_e(state.describe())}" for name, state in signatures.found
    )
    ancestry = _ancestry(folder, nodes, problems)
    title = f"{checkpoint['model_id']} · {checkpoint['name']} ({checkpoint['kind']})"
    body = f"""<main>
<h1>{_e(title)}</h1>
<div class="sub">ftc run report · {_e(shown or str(folder))} · lineage {verdict}<br>training curve: {_e(source)}</div>
<section><h2>Losses</h2>{losses}</section>
<section><h2>Lineage</h2>{more}{lineage_graph(nodes)}
<table><tr><th>node</th><th>digest</th><th>data</th><th>scores</th><th>here</th></tr>{ancestry}</table>
</section>
<section><h2>Run</h2>{_rows(_run(folder, record))}</section>
<section><h2>Pinned inputs</h2>{_rows(_pinned_inputs(record))}</section>
<section><h2>Settings</h2>{_rows(_settings(folder))}</section>
<section><h2>Environment</h2>{_rows(_environment(record["environment"]))}</section>
</main>"""
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _losses(stages: list[Stage], notes: list[str]) -> tuple[str, str]:
    """(the loss charts, where the training curve comes from): train and eval loss, exact match when evaluated, a
    classifier's metrics and last confusion matrix, and a preference model's rewards and log-probabilities; for a
    chain, every stage's curves on one continued step axis."""
    if not stages:  # an export's record: no training of its own, none before it known
        return "<p class='warn'>No losses were recorded.</p>" + stages_note(stages, notes), "none recorded"
    bands = stage_bands(stages)
    curves = stages_note(stages, notes) + line_chart(
        train_curves(stages, _TRAIN) + eval_curves(stages, "eval_loss", "eval loss", _EVAL),
        label="train and eval loss",
        bands=bands,
    )
    if len(stages) == 1:  # a chain's table above says it of every stage
        curves += (
            f"<p class='warn'>Training curve: {_e(stages[-1].train_source)}. Eval losses: from the lineage record.</p>"
        )
    matches = eval_curves(stages, "exact_match", "exact match", "#2b8a3e")
    match_chart = (
        "<h2>Exact match</h2>" + line_chart(matches, height=200, label="exact match", bands=bands)
        if any(s.points for s in matches)
        else ""
    )
    return curves + match_chart + classifier_section(stages) + preference_section(stages), stages[-1].train_source


def _verdict(problems: list[str]) -> str:
    """Whether the chain verified, or what did not."""
    return (
        '<span class="ok">verified</span>: every file and every record of the chain that is on this machine'
        if not problems
        else '<span class="bad">does not verify</span>:<ul>'
        + "".join(f"<li class='mono'>{_e(p)}</li>" for p in problems)
        + "</ul>"
    )


def _ancestry(folder: Path, nodes: list[Node], problems: list[str]) -> str:
    """The lineage table's rows: each node, its digests, data and eval loss, and whether it was re-hashed here."""
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
            f"<td>{'<br>'.join(f'<span class=nowrap>{_e(score)}</span>' for score in n.scores()) or '—'}</td>"
            f"<td class='{css}'>{_e(words)}</td></tr>"
        )
    return "".join(ancestry)


def _pinned_inputs(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """The parents and datasets the record pins (the first :data:`MAX_NODES` of each)."""
    parents = [
        (f"{p['role'].replace('_', ' ')} ({p['relation']})",
         f"<code>{_e(source_name(p['source']))}</code> "
         f"({_e(p['source']['source'])}) pinned <code>{_e(p.get('digest') or 'unpinned')}</code>")
        for p in record["parents"][:MAX_NODES]
    ] + [
        (f"{d['role']} data", f"<code>{_e(source_name(d['source']))}</code> "
         f"<code>{_e(d['sha256'])}</code>, {d['examples_used']} examples used, {d['examples_skipped']} skipped"
         + _reference(d))
        for d in record.get("datasets", [])[:MAX_NODES]
    ]  # fmt: skip
    hidden = len(record["parents"]) + len(record.get("datasets", [])) - len(parents)
    if hidden:
        parents.append(("more", f"{hidden} more not shown: `ftc lineage show` lists them all"))
    return parents


def _reference(dataset: dict[str, Any]) -> str:
    """A preference run's reference log-probabilities of a dataset, as its entry pins them (else nothing)."""
    pinned = dataset.get("reference_logprobs")
    if not isinstance(pinned, dict):
        return ""
    return (f"; the reference model's log-probabilities of its {_e(pinned.get('pairs'))} pairs pinned "
            f"<code>{_e(pinned.get('digest'))}</code>")  # fmt: skip


def _environment(env: dict[str, Any]) -> list[tuple[str, Any]]:
    """The Python, platform, packages and image the run used."""
    image = env.get("image")
    return [
        ("python", _e(env["python"])), ("platform", _e(env["platform"])),
        *[(name, _e(version or "not installed")) for name, version in sorted(env["packages"].items())],
        ("all packages", f"<code>{_e(env['packages_digest'])}</code>"),
        ("image", _e(f"{image.get('requested', image['ref'])} ({image.get('id', '')})" if image else
                     "none: the run used the local Python environment")),
    ]  # fmt: skip


def _run(folder: Path, record: dict[str, Any]) -> list[tuple[str, Any]]:
    """How the run went: status, steps, tokens, final loss, time, topology, its ids, reproduction and tracker."""
    results = record.get("results", {})
    trained = record.get("results") is not None
    execution = record.get("execution", {})
    wall = record.get("measured", {}).get("wall_time_s", results.get("wall_time_s"))
    return [
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
