"""A spec's logger whose client is not installed: ``ftc run`` stops before training, saying what to install, and in
a container (where installing is lost with it) which image variant carries the client. The client is made missing
the way Python itself documents (``sys.modules[name] = None``: its import fails), not by changing ftc."""

from __future__ import annotations

import json
import sys

import pytest

from ftc.errors import ExitCode


def _run(job, ftc, tmp_path, provider: str):
    assert ftc("compile", job(logger={"provider": provider}), "-o", tmp_path / "plan.json").code == 0
    return ftc("run", tmp_path / "plan.json")


@pytest.mark.parametrize("provider", ["mlflow", "wandb", "tensorboard"])
def test_a_missing_tracker_client_says_what_to_install(provider, job, ftc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, provider, None)
    monkeypatch.delenv("FTC_CONTAINER_IMAGE", raising=False)
    r = _run(job, ftc, tmp_path, provider)
    assert r.code == ExitCode.USAGE, r.err
    assert f"the {provider} package is not installed" in r.err and f"fix: pip install 'ftc[{provider}]'" in r.err
    assert not (tmp_path / "output" / "checkpoints").exists()  # stopped before training


def test_in_a_container_a_missing_tracker_client_names_the_image_variant(job, ftc, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv("FTC_CONTAINER_IMAGE", json.dumps({"ref": "ftc-runtime:0.1.0-cpu"}))
    r = _run(job, ftc, tmp_path, "mlflow")
    assert r.code == ExitCode.USAGE, r.err
    assert "ftc image build cpu|gpu --tracker mlflow" in r.err and "pip install" not in r.err
