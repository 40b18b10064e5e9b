"""A checkpoint's chain, from itself up to its roots, for people (one line per ancestor) and for tools (JSON,
Mermaid, Graphviz dot). Everything comes from the record; the embedded parents' records make it whole."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftc.spec.text import for_terminal

from .record import located

__all__ = ["SCORES", "Node", "chain", "render", "source_name"]

#: the scores an evaluation records besides its losses and exact match, as `lineage show` names them: a classifier's
#: macro shares, a preference model's reward accuracy, rewards and log-probabilities
SCORES = (
    ("eval_accuracy", "accuracy"), ("eval_precision_macro", "macro precision"),
    ("eval_recall_macro", "macro recall"), ("eval_f1_macro", "macro F1"), ("eval_prauc_macro", "macro PR-AUC"),
    ("eval_reward_accuracy", "reward accuracy"), ("eval_reward_margin", "reward margin"),
    ("eval_rewards_chosen", "chosen reward"), ("eval_rewards_rejected", "rejected reward"),
    ("eval_logps_chosen", "chosen log-probability"), ("eval_logps_rejected", "rejected log-probability"),
)  # fmt: skip
#: those that are shares (0 to 1), shown with three decimals; the others with four
_SHARES = {"eval_accuracy", "eval_precision_macro", "eval_recall_macro", "eval_f1_macro", "eval_prauc_macro",
           "eval_reward_accuracy"}  # fmt: skip


@dataclass(frozen=True)
class Node:
    index: int
    parent_index: int | None  # the node this one is a parent of (None: the checkpoint itself)
    depth: int
    relation: str | None  # how the node below derives from this one
    name: str
    record_id: str | None
    #: the checkpoint's own digest (its files, not its record) for the checkpoint itself; for a parent, the digest
    #: its child's plan pinned it by (a folder's every file, a checkpoint's record included): labelled apart
    digest: str | None
    data: list[str]
    eval_loss: float | None
    image: str | None = None  # the container the checkpoint was trained in
    location: str | None = None  # where the record says it is (relative to the checkpoint that names it)
    same_as: int | None = None  # drawn already, as this node: a parent two checkpoints share
    #: the share of exact answers at the checkpoint's evaluation (with evaluation.generate; else None)
    exact_match: float | None = None
    #: the other scores of that evaluation, by their record keys (:data:`SCORES`): a classifier's, a preference run's
    metrics: dict[str, float] = field(default_factory=dict)

    def scores(self) -> list[str]:
        """The checkpoint's evaluation as its record gives it: the eval loss, the exact match where measured, and a
        classifier's or a preference model's scores where it holds them."""
        out = [f"eval loss {self.eval_loss:.4f}"] if self.eval_loss is not None else []
        out += [f"exact match {self.exact_match:.3f}"] if self.exact_match is not None else []
        return out + [
            f"{name} {self.metrics[key]:.{3 if key in _SHARES else 4}f}" for key, name in SCORES if key in self.metrics
        ]


def _image(record: dict[str, Any]) -> str | None:
    image = record.get("environment", {}).get("image")
    if not image:
        return None
    text = image.get("requested", image["ref"]) + (f" ({image['id'][:19]}…)" if image.get("id") else "")
    return text if image["pinned"] else text + ", NOT reproducible: unpinned image"


def source_name(source: dict[str, Any]) -> str:
    """An input as its spec gave it (a spec-relative path, a URI, dvc:PATH@REV), else as the record locates it."""
    return source.get("given") or source.get("uri") or source.get("location") or source.get("source", "?")


def _data(record: dict[str, Any]) -> list[str]:
    """Each dataset as one line: its role, where it came from, its pin and the examples used; for a preference run,
    the reference model's log-probabilities of its pairs as the record pins them."""
    return [
        f"{d['role']} {source_name(d['source'])} {d['sha256'][:19]}… ({d['examples_used']} examples{_reference(d)})"
        for d in record.get("datasets", [])
    ]


def _reference(dataset: dict[str, Any]) -> str:
    pinned = dataset.get("reference_logprobs")
    if not isinstance(pinned, dict):
        return ""
    return f"; reference log-probs {_short(pinned.get('digest'))} of {pinned.get('pairs')} pairs"


def chain(record: dict[str, Any]) -> list[Node]:
    """The checkpoint and its ancestors, depth first (parents in record order); a parent reached a second time (the
    base model of both stages) is a node that names the first (``same_as``), without its ancestors again. Walked
    with a stack, not recursion: a record read by ``read_record`` is at most ``MAX_CHAIN_DEPTH`` records deep, and
    no depth of chain exhausts the walk."""
    nodes: list[Node] = []
    seen: dict[str, int] = {}

    def add(
        rec: dict[str, Any],
        parent_index: int | None,
        depth: int,
        relation: str | None,
        name: str,
        pinned: str | None,
        location: str | None,
    ) -> None:
        results = rec.get("results", {})
        nodes.append(
            Node(
                len(nodes), parent_index, depth, relation, name, rec.get("record_id"),
                pinned if parent_index is not None else rec["checkpoint"]["digest"],
                _data(rec), results.get("eval_loss"), _image(rec), location,
                exact_match=_at_step(results).get("exact_match"), metrics=_metrics(_at_step(results)),
            )
        )  # fmt: skip

    checkpoint = record["checkpoint"]
    add(record, None, 0, None,
        f"checkpoint {checkpoint.get('name', '')} ({checkpoint.get('kind')} of {checkpoint.get('model_id')})",
        None, None)  # fmt: skip
    # (a parent entry, the index of the node it is a parent of, its depth): popped in record order, each parent's
    # ancestors before its next sibling, as a recursive walk would
    stack = [(parent, 0, 1) for parent in reversed(record.get("parents", []))]
    while stack:
        parent, me, depth = stack.pop()
        label = f"{parent['role'].replace('_', ' ')} {source_name(parent['source'])}"
        key = parent.get("record_id") or parent.get("digest")
        where = parent["source"].get("location")
        if key is not None and key in seen:
            nodes.append(
                Node(len(nodes), me, depth, parent["relation"], label, parent.get("record_id"),
                     parent.get("digest"), [], None, location=where, same_as=seen[key])
            )  # fmt: skip
            continue
        if key is not None:
            seen[key] = len(nodes)
        lineage = parent.get("lineage")
        if lineage is None:
            nodes.append(
                Node(len(nodes), me, depth, parent["relation"], label, None, parent.get("digest"), [], None,
                     location=where)
            )  # fmt: skip
            continue
        add(lineage, me, depth, parent["relation"], label, parent.get("digest"), where)
        stack += [(p, nodes[-1].index, depth + 1) for p in reversed(lineage.get("parents", []))]
    return nodes


def _at_step(results: dict[str, Any]) -> dict[str, Any]:
    """The evaluation the checkpoint was saved after (its record's evaluation at its step; empty where none)."""
    at_step = [e for e in results.get("evals", []) if e.get("step") == results.get("step")]
    return at_step[-1] if at_step else {}


def _metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """The :data:`SCORES` an evaluation holds (a number each: null and anything else left out)."""
    return {
        key: evaluation[key]
        for key, _ in SCORES
        if isinstance(evaluation.get(key), (int, float)) and not isinstance(evaluation.get(key), bool)
    }


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest else "unpinned"


def _text(nodes: list[Node], folder: Path | None = None) -> str:
    """A tree: ├─ for a parent with a sibling after it, └─ for the last; one labelled digest per node (``files``:
    the checkpoint's own files; ``pinned``: a parent as its child's plan pinned it); with ``folder``, where each
    parent is on this machine."""
    last_child = {n.parent_index: n.index for n in nodes if n.parent_index is not None}
    lines, prefix_of = [], {}
    for node in nodes:
        if node.parent_index is None:
            head, prefix_of[node.index] = "", ""
        else:
            last = last_child[node.parent_index] == node.index
            above = prefix_of[node.parent_index]
            head = above + ("└─ " if last else "├─ ") + f"{node.relation}: "
            prefix_of[node.index] = above + ("   " if last else "│  ")
        label = "files" if node.parent_index is None else "pinned"
        parts = [head + node.name, f"{label} {_short(node.digest)}"]
        if node.same_as is not None:
            first = nodes[node.same_as]
            of = nodes[first.parent_index].name.split(" (")[0] if first.parent_index is not None else ""
            lines.append("  ".join([*parts, f"(shown above, as the {first.relation} parent of {of})"]))
            continue
        parts.append(f"record {_short(node.record_id)}" if node.record_id else "no lineage record")
        if node.data:
            parts.append("data " + ", ".join(node.data))
        parts += node.scores()
        if node.image:
            parts.append(f"image {node.image}")
        if folder is not None and node.location is not None:
            parts.append(f"at {_resolved(folder, nodes, node)}")
        lines.append("  ".join(parts))
    # names, locations and data come from records (outside text): one line per node, its control characters shown
    return "\n".join(for_terminal(line) for line in lines)


def _resolved(folder: Path, nodes: list[Node], node: Node) -> str:
    """Where ``node`` is on this machine: its location, relative to the checkpoint that names it."""
    base = folder
    chain_up = []
    at = nodes[node.parent_index] if node.parent_index is not None else None
    while at is not None and at.parent_index is not None:
        chain_up.append(at)
        at = nodes[at.parent_index]
    for step in reversed(chain_up):  # each parent's own record locates its parents relative to itself
        if step.location is None:
            return f"not on this machine (below {step.name}, which is not)"
        base = Path(os.path.normpath(base / step.location))
    return str(located(node.location, base))


# what a Mermaid label may hold as it is: letters, digits and punctuation with no meaning inside a quoted label;
# everything else is written as an entity code (#35; for "#"), so no text closes the label, starts a directive
# (%%{init: ...}%%), a Markdown string (`) or markup (<script>), nor breaks the line
_MERMAID_PLAIN = re.compile(r"[^\w .,:/@+=~'()\[\]!?…-]")


def _for_mermaid(text: str) -> str:
    """``text`` as literal text of a quoted Mermaid label or edge label (control characters shown escaped)."""
    return _MERMAID_PLAIN.sub(lambda m: f"#{ord(m.group())};", for_terminal(text))


def _for_dot(text: str) -> str:
    """``text`` as literal text of a quoted Graphviz label (control characters shown escaped, no ``\\l`` or ``"``
    with a meaning)."""
    return for_terminal(text).replace("\\", "\\\\").replace('"', '\\"')


def _label(node: Node, escape: Callable[[str], str], newline: str) -> str:
    lines = [node.name, _short(node.digest), *node.scores()]
    return newline.join(escape(line) for line in lines)


def _edges(nodes: list[Node]) -> list[tuple[int, int | None, str | None]]:
    """(from, to, relation) for every parent link; a parent shared by two checkpoints is one node with two edges."""
    return [
        (n.same_as if n.same_as is not None else n.index, n.parent_index, n.relation)
        for n in nodes
        if n.parent_index is not None
    ]


def _mermaid(nodes: list[Node]) -> str:
    lines = ["flowchart BT"]
    lines += [f'  n{n.index}["{_label(n, _for_mermaid, "<br/>")}"]' for n in nodes if n.same_as is None]
    lines += [f"  n{a} -->|{_for_mermaid(str(relation))}| n{b}" for a, b, relation in _edges(nodes)]
    return "\n".join(lines)


def _dot(nodes: list[Node]) -> str:
    lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box];"]
    lines += [f'  n{n.index} [label="{_label(n, _for_dot, chr(92) + "n")}"];' for n in nodes if n.same_as is None]
    lines += [f'  n{a} -> n{b} [label="{_for_dot(str(relation))}"];' for a, b, relation in _edges(nodes)]
    return "\n".join(lines + ["}"])


def render(record: dict[str, Any], fmt: str = "text", folder: Path | None = None) -> str:
    """The chain of ``record`` in ``fmt``; with ``folder`` (the checkpoint's), text also says where each parent is."""
    nodes = chain(record)
    if fmt == "json":
        return json.dumps({"chain": [asdict(n) for n in nodes]}, indent=2)
    if fmt == "text":
        return _text(nodes, folder.resolve() if folder is not None else None)  # as verify: from the real folder
    return {"mermaid": _mermaid, "dot": _dot}[fmt](nodes)
