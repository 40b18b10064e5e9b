"""Context extension at compile: rope_scaling lets context_length exceed the model's own length up to factor x it,
resolved against the model's config.json and recorded in the plan; without it the refusal names rope_scaling."""

from __future__ import annotations

import json
import shutil

import pytest

from ftc.errors import ExitCode

from conftest import read_json


@pytest.fixture(scope="module")
def llama31_like(tmp_path_factory):
    """A tiny model whose config.json already scales RoPE as Llama 3.1's does (llama3, factor 8 from 64)."""
    from support.models import build_tiny_model

    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    rope |= {"original_max_position_embeddings": 64, "rope_theta": 10000.0}
    return build_tiny_model(tmp_path_factory.mktemp("llama31"), max_position_embeddings=512, rope_parameters=rope)


def _compile(job, ftc, tmp_path, **spec):
    return ftc("compile", job(**spec), "-o", tmp_path / "plan.json")


def test_a_context_above_the_models_length_is_refused_naming_rope_scaling(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, context_length=2048)
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.context_length: 2048 is above the model's max_position_embeddings (512)" in r.err
    assert "rope_scaling: {rope_type: linear, factor: 4}" in r.err


def test_linear_scaling_takes_the_context_up_to_factor_times_the_native_length(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, context_length=2048, rope_scaling={"rope_type": "linear", "factor": 4})
    assert r.code == 0, r.err
    plan = read_json(tmp_path / "plan.json")
    assert plan["spec"]["context_length"] == 2048
    assert plan["spec"]["rope_scaling"] == {
        "rope_type": "linear", "factor": 4.0, "original_max_position_embeddings": 512,
        "low_freq_factor": None, "high_freq_factor": None, "beta_fast": None, "beta_slow": None,
    }  # fmt: skip
    shown = ftc("plan", "show", tmp_path / "plan.json").out
    assert "rope      linear x4 (512 -> 2048 positions), applied at load and in config.json" in shown


def test_a_context_beyond_what_the_factor_reaches_is_refused(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, context_length=4096, rope_scaling={"rope_type": "dynamic", "factor": 4})
    assert r.code == ExitCode.SPEC_INVALID
    assert "4096 is above what rope_scaling dynamic x4 (512 -> 2048 positions) takes (2048)" in r.err
    assert "fix: raise rope_scaling.factor to 8 or more" in r.err


def test_linear_without_a_factor_takes_it_from_the_context_length(job, ftc, tmp_path):
    assert _compile(job, ftc, tmp_path, context_length=1536, rope_scaling={"rope_type": "linear"}).code == 0
    assert read_json(tmp_path / "plan.json")["spec"]["rope_scaling"]["factor"] == 3.0


def test_llama3_and_yarn_get_their_defaults_written_into_the_plan(job, ftc, tmp_path):
    assert (
        _compile(job, ftc, tmp_path, context_length=1024, rope_scaling={"rope_type": "llama3", "factor": 2}).code == 0
    )
    rope = read_json(tmp_path / "plan.json")["spec"]["rope_scaling"]
    assert (rope["low_freq_factor"], rope["high_freq_factor"], rope["original_max_position_embeddings"]) == (1, 4, 512)
    assert _compile(job, ftc, tmp_path, rope_scaling={"rope_type": "yarn", "factor": 2}).code == 0
    rope = read_json(tmp_path / "plan.json")["spec"]["rope_scaling"]
    assert (rope["beta_fast"], rope["beta_slow"]) == (32, 1)


def test_another_types_settings_and_a_wrong_native_length_are_problems(job, ftc, tmp_path):
    rope = {"rope_type": "linear", "factor": 2, "beta_fast": 16, "original_max_position_embeddings": 4096}
    r = _compile(job, ftc, tmp_path, rope_scaling=rope)
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.rope_scaling.beta_fast: beta_fast is a setting of rope_type yarn, not linear" in r.err
    assert "$.rope_scaling.original_max_position_embeddings: 4096 is not the model's native length (512)" in r.err


def test_a_model_that_already_scales_rope_refuses_another_type(job, ftc, tmp_path, llama31_like):
    spec = dict(initial_base_model_ckpt_path=str(llama31_like), rope_scaling={"rope_type": "linear", "factor": 2})
    r = _compile(job, ftc, tmp_path, **spec)
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.rope_scaling.rope_type: the model's config.json already scales RoPE (llama3, factor 8.0)" in r.err
    assert "or give rope_type: llama3 to replace its scaling" in r.err


def test_the_same_type_replaces_the_models_scaling_counted_from_its_original_length(job, ftc, tmp_path, llama31_like):
    spec = dict(initial_base_model_ckpt_path=str(llama31_like), context_length=1024)
    assert _compile(job, ftc, tmp_path, **spec, rope_scaling={"rope_type": "llama3", "factor": 16}).code == 0
    rope = read_json(tmp_path / "plan.json")["spec"]["rope_scaling"]
    assert rope["original_max_position_embeddings"] == 64 and rope["factor"] == 16
    # without rope_scaling the model keeps its own: up to its max_position_embeddings, as before
    assert _compile(job, ftc, tmp_path, initial_base_model_ckpt_path=str(llama31_like), context_length=512).code == 0
    assert read_json(tmp_path / "plan.json")["spec"]["rope_scaling"] is None


def test_llmforges_linear_embedding_scaling_is_rope_scaling_linear_in_the_plan(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, context_length=2048, embedding_scaling_technique="linear")
    assert r.code == 0, r.err
    spec = read_json(tmp_path / "plan.json")["spec"]
    assert "embedding_scaling_technique" not in spec  # one setting, one place
    assert (spec["rope_scaling"]["rope_type"], spec["rope_scaling"]["factor"]) == ("linear", 4.0)
    r = _compile(job, ftc, tmp_path, context_length=2048, embedding_scaling_technique="none")
    assert r.code == ExitCode.SPEC_INVALID and "above the model's max_position_embeddings (512)" in r.err


def test_llmforges_embedding_scaling_and_rope_scaling_together_are_a_problem(job, ftc, tmp_path):
    rope = {"rope_type": "linear", "factor": 4}
    r = _compile(job, ftc, tmp_path, context_length=2048, embedding_scaling_technique="linear", rope_scaling=rope)
    assert r.code == ExitCode.SPEC_INVALID
    assert (
        "$.embedding_scaling_technique: llmforge's embedding_scaling_technique: linear and rope_scaling both" in r.err
    )


def test_llama_31_by_its_model_id_is_known_to_scale_rope_already(job, ftc, tmp_path):
    hub = dict(model_id="meta-llama/Llama-3.1-8B-Instruct", initial_base_model_ckpt_path=None)
    r = _compile(job, ftc, tmp_path, **hub, rope_scaling={"rope_type": "linear", "factor": 2})
    assert r.code == ExitCode.SPEC_INVALID and "already scales RoPE (llama3, factor 8.0)" in r.err
    r = _compile(job, ftc, tmp_path, **hub, context_length=262144, rope_scaling={"rope_type": "llama3", "factor": 32})
    assert r.code == 0, r.err
    rope = read_json(tmp_path / "plan.json")["spec"]["rope_scaling"]
    assert (rope["original_max_position_embeddings"], rope["factor"]) == (8192, 32)


def test_llmforges_linear_embedding_scaling_without_a_context_length_says_so_where_it_is_written(job, ftc, tmp_path):
    r = _compile(job, ftc, tmp_path, context_length=None, embedding_scaling_technique="linear")
    assert r.code == ExitCode.SPEC_INVALID
    assert "$.embedding_scaling_technique: no factor, and no context_length to derive it from" in r.err


def test_weights_whose_config_gives_no_native_length_cannot_be_scaled(job, ftc, tmp_path, tiny_model):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model, weights)
    config = json.loads((weights / "config.json").read_text())
    del config["max_position_embeddings"]
    (weights / "config.json").write_text(json.dumps(config))
    spec = dict(initial_base_model_ckpt_path=str(weights), rope_scaling={"rope_type": "linear", "factor": 2})
    r = _compile(job, ftc, tmp_path, **spec)
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.rope_scaling.rope_type: the model's config.json has no max_position_embeddings" in r.err
    assert "use weights whose config.json gives it" in r.err
