"""Properties of the readers of outside text, over generated inputs: whatever a spec or a data line holds, reading
it ends in a result or a user-facing error (never another exception), quickly."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftc.errors import FtcError
from ftc.spec import load_spec
from ftc.spec.chat_data import read_chat_jsonl

# JSON-like documents: what a YAML or JSON spec can hold, keys often the real ones
KEYS = st.sampled_from(["model_id", "train_path", "lora_config", "r", "num_epochs", "learning_rate", "seed", "x"])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5))

FAST = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.text(max_size=400))
def test_any_text_as_a_spec_loads_or_is_a_user_facing_error(tmp_path: Path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_spec(path)
    except FtcError:
        pass


@FAST
@given(DOCUMENTS)
def test_any_document_as_a_spec_loads_or_is_a_user_facing_error(tmp_path: Path, document):
    path = tmp_path / "job.json"
    path.write_text(json.dumps(document))
    try:
        loaded = load_spec(path)
    except FtcError:
        return
    assert loaded.spec is not None or loaded.problems  # a document that is no spec says why


@FAST
@given(st.lists(st.binary(max_size=200) | DOCUMENTS.map(json.dumps).map(str.encode), max_size=8))
def test_any_lines_as_chat_data_give_each_line_an_example_or_a_reason(tmp_path: Path, lines: list[bytes]):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    for item in read_chat_jsonl(path):
        assert (item.messages is None) == (item.problem is not None)
        if item.messages is not None:
            assert all(isinstance(m["content"], str) for m in item.messages)
