"""A lineage record in other tools' formats: an OpenLineage run event, a CycloneDX 1.6 ML-BOM, a Hugging Face
model card. Each is built from the record alone, so exporting twice gives the same bytes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import ftc
from ftc.errors import UsageError
from ftc.spec.text import for_markdown
from ftc.stores.sources import kind_named

__all__ = ["FORMATS", "export", "front_matter"]

OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
PRODUCER = f"urn:ftc:{ftc.__version__}"


def _uuid(record_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:ftc:lineage:{record_id}"))


def _name(source: dict[str, Any]) -> str:
    return source.get("location") or source.get("uri") or source["source"]


def _shown(source: dict[str, Any]) -> str:
    """For people: the location as the spec gave it, where the record has it."""
    return source.get("given") or _name(source)


def _namespace(source: dict[str, Any]) -> str:
    kind = kind_named(source["source"])
    return kind.namespace(source) if kind is not None else source["source"]


def _facet(**fields: Any) -> dict[str, Any]:
    return {
        "_producer": PRODUCER,
        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
        **fields,
    }


def openlineage(record: dict[str, Any], event_time: str) -> dict[str, Any]:
    """The training run as an OpenLineage COMPLETE run event: data and parent checkpoints in, the checkpoint out,
    each with its sha256 as the dataset version."""
    inputs = [
        {
            "namespace": _namespace(d["source"]),
            "name": _name(d["source"]),
            "facets": {"version": _facet(datasetVersion=d["sha256"])},
        }
        for d in record["datasets"]
    ]
    for parent in record["parents"]:
        dataset = {"namespace": _namespace(parent["source"]), "name": _name(parent["source"])}
        if parent.get("digest"):
            dataset["facets"] = {"version": _facet(datasetVersion=parent["digest"])}
        inputs.append(dataset)
    checkpoint = record["checkpoint"]
    return {
        "eventType": "COMPLETE" if record["results"]["status"] == "complete" else "RUNNING",
        "eventTime": event_time,
        "producer": PRODUCER,
        "schemaURL": OPENLINEAGE_SCHEMA,
        "run": {"runId": _uuid(record["record_id"])},
        "job": {
            "namespace": "ftc",
            "name": f"{checkpoint['model_id']}:{record['plan']['mode']}:{record['plan']['plan_id'][7:19]}",
        },
        "inputs": inputs,
        "outputs": [
            {
                "namespace": "ftc",
                "name": f"{checkpoint['model_id']}/{checkpoint['name']}",
                "facets": {"version": _facet(datasetVersion=checkpoint["digest"])},
            }
        ],
    }


def _hashes(digest: str | None) -> list[dict[str, str]]:
    return [{"alg": "SHA-256", "content": digest.removeprefix("sha256:")}] if digest else []


def _model_component(record: dict[str, Any]) -> dict[str, Any]:
    # recursive, one call per record: a record ftc reads holds at most MAX_CHAIN_DEPTH (record.py)
    checkpoint = record["checkpoint"]
    ancestors = []
    for parent in record["parents"]:
        if parent.get("lineage") is not None:
            ancestor = _model_component(parent["lineage"])
        else:
            ancestor = {
                "type": "machine-learning-model",
                "bom-ref": f"{parent['role']}:{parent.get('digest') or _name(parent['source'])}",
                "name": _name(parent["source"]),
            }
            if parent.get("digest"):
                ancestor["hashes"] = _hashes(parent["digest"])
        ancestor["description"] = f"{parent['relation']} parent ({parent['role'].replace('_', ' ')})"
        ancestors.append(ancestor)
    component: dict[str, Any] = {
        "type": "machine-learning-model",
        "bom-ref": record["record_id"],
        "name": checkpoint["model_id"],
        "version": f"{checkpoint['name']}+{record['record_id'][7:19]}",
        "hashes": _hashes(checkpoint["digest"]),
        "properties": [
            {"name": "ftc:record_id", "value": record["record_id"]},
            {"name": "ftc:plan_id", "value": record["plan"]["plan_id"]},
        ],
    }
    if ancestors:
        component["pedigree"] = {"ancestors": ancestors}
    return component


def cyclonedx(record: dict[str, Any]) -> dict[str, Any]:
    """A CycloneDX 1.6 ML-BOM: the model with its hash, its parents as pedigree ancestors (recursively), the data
    as data components its model card points at."""
    model = _model_component(record)
    data = []
    for d in record["datasets"]:
        ref = f"data:{d['role']}:{d['sha256']}"
        data.append(
            {
                "type": "data",
                "bom-ref": ref,
                "name": _name(d["source"]),
                "hashes": _hashes(d["sha256"]),
                "data": [
                    {
                        "type": "dataset",
                        "name": _name(d["source"]),
                        "description": (
                            f"{d['role']} data: {d['examples_used']} examples used, {d['examples_skipped']} skipped"
                        ),
                    }
                ],
            }
        )
    metrics = [
        {"type": "eval_loss", "value": f"{e['eval_loss']:.6f}", "slice": f"step {e['step']}"}
        for e in record["results"]["evals"]
        if e.get("eval_loss") is not None
    ]
    model["modelCard"] = {
        "modelParameters": {"task": "text-generation", "datasets": [{"ref": c["bom-ref"]} for c in data]},
        "quantitativeAnalysis": {"performanceMetrics": metrics},
    }
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{_uuid(record['record_id'])}",
        "version": 1,
        "metadata": {
            "tools": {"components": [{"type": "application", "name": "ftc", "version": ftc.__version__}]},
            "component": {k: model[k] for k in ("type", "bom-ref", "name", "version")},
        },
        "components": [model, *data],
    }


def front_matter(metadata: dict[str, Any]) -> str:
    """A Markdown file's YAML front matter (``---`` … ``---``) holding ``metadata``, written by a YAML emitter: a
    value is one scalar whatever it holds (a newline, ``key: value``, ``!!python/object``, ``---``), never a key."""
    import yaml

    text = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=False, default_flow_style=False, width=1 << 16)
    return f"---\n{text}---\n"


def model_card(record: dict[str, Any]) -> str:
    """A Hugging Face model card (README.md) whose metadata names the base model and the relation to it. Names from
    the record are outside text: the metadata is emitted as YAML, the body escaped as Markdown."""
    checkpoint = record["checkpoint"]
    adapter = checkpoint["kind"] == "adapter"
    front = front_matter(
        {
            "base_model": checkpoint["model_id"],
            "base_model_relation": "adapter" if adapter else "finetune",
            "library_name": "peft" if adapter else "transformers",
            "tags": ["ftc"],
        }
    )
    md = for_markdown
    lines = [
        f"# {md(checkpoint['model_id'])} {'adapter' if adapter else 'fine-tune'} ({md(checkpoint['name'])})",
        "",
        # record_id: a sha256 digest (lineage.schema.json's pattern, checked when the record was read)
        f"Trained with ftc. Lineage record `{record['record_id']}`; verify it with `ftc lineage verify`.",
        "",
    ]
    lines += ["## Parents", ""]
    lines += [
        f"- {md(p['relation'])}: {md(_shown(p['source']))} "
        f"({'pinned ' + md(p['digest']) if p.get('digest') else 'unpinned'})"
        for p in record["parents"]
    ]
    lines += ["", "## Data", ""]
    lines += [
        f"- {md(d['role'])}: {md(_shown(d['source']))} ({md(d['sha256'])}), {d['examples_used']} examples"
        for d in record["datasets"]
    ]
    lines += ["", "## Results", "", "| step | eval loss |", "|---|---|"]
    lines += [
        f"| {e['step']} | {e['eval_loss']:.4f} |" for e in record["results"]["evals"] if e.get("eval_loss") is not None
    ]
    return front + "\n" + "\n".join(lines) + "\n"


FORMATS = ("openlineage", "cyclonedx", "model-card")


def export(record: dict[str, Any], fmt: str, event_time: str) -> str:
    if "export" in record:
        raise UsageError(
            "this folder is an export of a checkpoint (`ftc export`): its model card is its README.md, and its "
            "training is described by the checkpoint's record: export the lineage of that checkpoint instead"
        )
    if fmt == "model-card":
        return model_card(record)
    document = openlineage(record, event_time) if fmt == "openlineage" else cyclonedx(record)
    return json.dumps(document, indent=2)
