"""The training library's public face (``ftc.runtime.training``) names each piece once, lazily: every name it lists
resolves, to the object its module exports under that name."""

from __future__ import annotations

import importlib.util

import pytest

import ftc.runtime.training as training

MODULES = sorted(n for n in training.__all__ if importlib.util.find_spec(f"ftc.runtime.training.{n}") is not None)
NAMES = sorted(set(training.__all__) - set(MODULES))


def test_the_library_lists_its_modules_and_their_names():
    assert {"batches", "checkpoint", "loss", "model", "render", "tokens"} <= set(MODULES)
    assert {"collate", "load_model", "TokenLoss", "Checkpointer"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_each_name_of_the_library_is_exported_by_its_module(name):
    value = getattr(training, name)
    exporters = [m for m in MODULES if name in importlib.import_module(f"ftc.runtime.training.{m}").__all__]
    assert len(exporters) == 1, f"{name} is exported by {exporters}"
    assert getattr(importlib.import_module(f"ftc.runtime.training.{exporters[0]}"), name) is value


def test_a_name_the_library_does_not_have_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        training.train  # noqa: B018
