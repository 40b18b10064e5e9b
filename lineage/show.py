"""A checkpoint's chain, from itself up to its roots, for people (one line per ancestor) and for tools (JSON,
Mermaid, Graphviz dot). Everything comes from the record; the embedded parents' records make it whole."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Node", "chain", "render"]


@dataclass(frozen=True)
class Node:
    index: int
    parent_index: int | None  # the node this one is a parent of (None: the checkpoint itself)
    depth: int
    relation: str | None  # how the node below derives from this one
    name: str
    record_id: str | None
    digest: str | None
    data: list[str]
    eval_loss: float | None
    image: str | None = None  # the container the checkpoint was trained in


def _image(record: dict[str, Any]) -> str | None:
    image = record.get("environment", {}).get("image")
    if not image:
        return None
    text = image.get("requested", image["ref"]) + (f" ({image['id'][:19]}…)" if image.get("id") else "")
    return text if image["pinned"] else text + ", NOT reproducible: unpinned image"


def _source_name(source: dict[str, Any]) -> str:
    return source.get("location") or source.get("uri") or source.get("source", "?")


def _data(record: dict[str, Any]) -> list[str]:
    return [
        f"{d['role']} {_source_name(d['source']).rsplit('/', 1)[-1]} {d['sha256'][:19]}…"
        f" ({d['examples_used']} examples)"
        for d in record.get("datasets", [])
    ]


def chain(record: dict[str, Any]) -> list[Node]:
    """The checkpoint and its ancestors, depth first (parents in record order)."""
    nodes: list[Node] = []

    def visit(rec: dict[str, Any], parent_index: int | None, depth: int, relation: str | None, name: str) -> None:
        results = rec.get("results", {})
        nodes.append(
            Node(
                len(nodes),
                parent_index,
                depth,
                relation,
                name,
                rec.get("record_id"),
                rec["checkpoint"]["digest"],
                _data(rec),
                results.get("eval_loss"),
                _image(rec),
            )
        )
        me = nodes[-1].index
        for parent in rec.get("parents", []):
            label = f"{parent['role'].replace('_', ' ')} {_source_name(parent['source'])}"
            if parent.get("lineage") is not None:
                visit(parent["lineage"], me, depth + 1, parent["relation"], label)
            else:
                nodes.append(
                    Node(len(nodes), me, depth + 1, parent["relation"], label, None, parent.get("digest"), [], None)
                )

    visit(
        record,
        None,
        0,
        None,
        f"checkpoint {record['checkpoint'].get('name', '')}"
        f" ({record['checkpoint'].get('kind')} of {record['checkpoint'].get('model_id')})",
    )
    return nodes


def _short(digest: str | None) -> str:
    return digest[:19] + "…" if digest else "unpinned"


def _text(nodes: list[Node]) -> str:
    lines = []
    for node in nodes:
        head = "" if node.depth == 0 else "   " * (node.depth - 1) + f"└─ {node.relation}: "
        parts = [head + node.name, f"digest {_short(node.digest)}"]
        parts.append(f"record {_short(node.record_id)}" if node.record_id else "no lineage record")
        if node.data:
            parts.append("data " + ", ".join(node.data))
        if node.eval_loss is not None:
            parts.append(f"eval loss {node.eval_loss:.4f}")
        if node.image:
            parts.append(f"image {node.image}")
        lines.append("  ".join(parts))
    return "\n".join(lines)


def _label(node: Node) -> str:
    text = f"{node.name}\\n{_short(node.digest)}"
    if node.eval_loss is not None:
        text += f"\\neval loss {node.eval_loss:.4f}"
    return text.replace('"', "'")


def _mermaid(nodes: list[Node]) -> str:
    lines = ["flowchart BT"]
    lines += [f'  n{n.index}["{_label(n).replace(chr(92) + "n", "<br/>")}"]' for n in nodes]
    lines += [f"  n{n.index} -->|{n.relation}| n{n.parent_index}" for n in nodes if n.parent_index is not None]
    return "\n".join(lines)


def _dot(nodes: list[Node]) -> str:
    lines = ["digraph lineage {", "  rankdir=BT;", "  node [shape=box];"]
    lines += [f'  n{n.index} [label="{_label(n)}"];' for n in nodes]
    lines += [f'  n{n.index} -> n{n.parent_index} [label="{n.relation}"];' for n in nodes if n.parent_index is not None]
    return "\n".join(lines + ["}"])


def render(record: dict[str, Any], fmt: str = "text") -> str:
    nodes = chain(record)
    if fmt == "json":
        return json.dumps({"chain": [asdict(n) for n in nodes]}, indent=2)
    return {"text": _text, "mermaid": _mermaid, "dot": _dot}[fmt](nodes)
