"""`ftc eval` and `ftc export` keep the libraries' deprecation notices about their own calls out of the user's way,
as `ftc run` does (transformers' FutureWarning that `is_gradient_checkpointing` is deprecated, raised when peft
loads an adapter on its base): nothing a user can act on."""

from __future__ import annotations

import warnings

import pytest

pytestmark = pytest.mark.slow


def _deprecations(ftc, *args) -> list[str]:
    """The deprecation notices ``ftc ARGS`` raises (every one, however often), after checking it succeeds."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = ftc(*args)
    assert r.code == 0, r.err
    return [str(w.message) for w in caught if "deprecated" in str(w.message)]


def test_eval_and_export_of_an_adapter_raise_no_deprecation_notices(trained, ftc, tmp_path):
    out = trained()  # a LoRA adapter: loaded on its base by peft
    assert _deprecations(ftc, "eval", out, "--data", tmp_path / "data/valid.jsonl", "-o", tmp_path / "rows.jsonl") == []
    assert _deprecations(ftc, "export", out, "-o", tmp_path / "export") == []  # merged into its base
