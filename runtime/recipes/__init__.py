"""Recipes: one file each, read top to bottom, written with the training library (``ftc.runtime.training``) only.
``sft`` fine-tunes on chat examples (instruction tuning, continued pre-training, and classifiers: their difference
is which tokens the library trains and what the evaluation adds). A recipe imports no other recipe and nothing of
the launch layer, which starts it through :func:`recipe_for`, the one table of which recipe trains which task."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ftc.spec.tasks import TASKS

__all__ = ["RECIPES", "recipe_for", "sft"]

#: the task a plan trains -> the recipe (a module here) whose ``train(plan, ...)`` runs it (the spec's task table)
RECIPES = {name: task.recipe for name, task in TASKS.items() if task.recipe is not None}


def recipe_for(task: str) -> Callable[..., Any]:
    """The ``train`` function of the recipe for ``task``, imported now (a recipe loads torch and DeepSpeed)."""
    return importlib.import_module(f"{__name__}.{RECIPES[task]}").train
