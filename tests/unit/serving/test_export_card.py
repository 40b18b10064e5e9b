"""The README.md of an export (its model card) is built from a checkpoint's record and spec: outside text. Its YAML
metadata is written by a YAML emitter and its Markdown escaped, so no name adds a key, a link or raw HTML."""

from __future__ import annotations

import re

import pytest
import yaml

from ftc.serving.card import model_card
from ftc.serving.trained import Trained

from support.records import DIGEST, write_checkpoint

STOPS = ["</s>", "<script>alert(1)</script>", "```", "`", "<img src=x onerror=alert(1)>", "\x1b[2J\r"]


def _card(tmp_path, model_id: str, name: str = "my-export", stops: list[str] = STOPS) -> str:
    base = {"role": "base_model", "relation": "adapter", "source": {"source": "hub", "uri": model_id}, "digest": None}
    valid = {"role": "valid", "source": {"source": "local", "kind": "file", "location": f"../{model_id}.jsonl"},
             "sha256": DIGEST, "examples": 4, "examples_used": 4, "examples_skipped": 0}  # fmt: skip
    folder = tmp_path / "ckpt"
    record = write_checkpoint(folder, model_id=model_id, parents=[base], datasets=[valid],
                              checkpoint={"name": f"step-4 {model_id}"})  # fmt: skip
    trained = Trained(folder, record, False, True, None, None, stops, model_id)
    export = {"merged": False, "dtype": "float32", "chat_template": "prompt_format", "stop_strings": stops,
              "eos_token_id": [2]}  # fmt: skip
    return model_card(trained, export, name)


def _front(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


@pytest.mark.parametrize(
    "model_id",
    [
        "org/model\nlicense: mit\npipeline_tag: text-classification",
        "!!python/object/apply:os.system ['touch /tmp/ftc-pwned']",
        'org/"model": {a: [b]} #c',
        "org/model\x1b[2J\u202e",
    ],
    ids=["new keys", "python tag", "yaml syntax", "terminal escapes"],
)
def test_the_export_card_metadata_holds_exactly_its_keys_whatever_the_names(model_id, tmp_path):
    metadata, _ = _front(_card(tmp_path, model_id, name=model_id))
    assert metadata == {
        "base_model": model_id,
        "base_model_relation": "adapter",
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["ftc"],
        "model-index": [
            {
                "name": model_id,
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": f"../{model_id}.jsonl", "type": "json"},
                        "metrics": [{"type": "loss", "name": "eval loss", "value": 1.5}],
                    }
                ],
            }
        ],
    }


def test_the_export_card_body_holds_no_raw_html_from_stop_strings_or_names(tmp_path):
    _, body = _front(_card(tmp_path, "org/<b>model</b>", name="[click](http://evil.example)"))
    prose = re.sub(r"^(`{3,})[^`\n]*\n.*?^\1$", "", body, flags=re.M | re.S)  # code blocks show their text as it is
    assert "<script" not in prose and "<img" not in prose and "<b>" not in prose and "## Lineage" in prose
    assert "&lt;script&gt;alert\\(1\\)&lt;/script&gt;" in body and "](http" not in body
    assert not any(c in body for c in "\x1b\r")
    fences = re.findall(r"^`{3,}$", body, re.M)
    assert len(fences) == 3 and fences[1] == fences[2]  # the python example's end, then the lineage block's pair


def test_a_lineage_block_holding_backticks_gets_a_longer_fence(tmp_path):
    _, body = _front(_card(tmp_path, "org/````model"))
    lineage = body.split("## Lineage\n\n", 1)[1]
    fence = lineage.splitlines()[0]
    assert fence == "`" * 5 and lineage.rstrip("\n").endswith("\n" + fence)
