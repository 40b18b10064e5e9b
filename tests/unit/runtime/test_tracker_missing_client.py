"""A spec's logger whose client is not installed: the run stops before training, saying what to install, and in a
container (where installing is lost with it) which image variant carries the client. The client is made missing
the way Python itself documents (``sys.modules[name] = None``: its import fails), not by changing ftc."""

from __future__ import annotations

import json
import sys

import pytest

from ftc.errors import ExitCode, UsageError
from ftc.runtime.training.trackers import _backend
from ftc.spec.model import Logger


@pytest.mark.parametrize("provider", ["mlflow", "wandb", "tensorboard"])
def test_a_missing_tracker_client_says_what_to_install(provider, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, provider, None)
    monkeypatch.delenv("FTC_CONTAINER_IMAGE", raising=False)
    with pytest.raises(UsageError) as found:
        _backend(Logger(provider, {}, "fail"), tmp_path)
    assert found.value.exit_code == ExitCode.USAGE
    assert f"the {provider} package is not installed" in str(found.value)
    assert f"fix: pip install 'ftc[{provider}]'" in str(found.value)


def test_in_a_container_a_missing_tracker_client_names_the_image_variant(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setenv("FTC_CONTAINER_IMAGE", json.dumps({"ref": "ftc-runtime:0.1.0-cpu"}))
    with pytest.raises(UsageError) as found:
        _backend(Logger("mlflow", {}, "fail"), tmp_path)
    assert "ftc image build cpu|gpu --tracker mlflow" in str(found.value) and "pip install" not in str(found.value)
