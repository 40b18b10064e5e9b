"""The one table of which recipe trains which task: every task a plan can hold has one, and the launcher uses it."""

from __future__ import annotations

import typing

from ftc.runtime.recipes import RECIPES, recipe_for
from ftc.runtime.recipes.sft import train
from ftc.spec.model import JobSpec
from ftc.spec.tasks import TASKS


def test_every_task_ftc_trains_has_a_recipe_and_the_others_are_refused_at_compile():
    tasks = set(typing.get_args(typing.get_type_hints(JobSpec)["task"]))
    assert set(TASKS) == tasks  # the table has every task a spec may name, and no other
    refused = {name for name, task in TASKS.items() if task.refused is not None}
    assert refused and set(RECIPES) == tasks - refused
    assert recipe_for("classification") is train
