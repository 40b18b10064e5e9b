"""The job spec: its schema, loading with line-accurate errors, and the typed, frozen spec objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import _UNSET, Problem, SpecInvalid

from ._field_checks import spec_problems
from ._llmforge_keys import taken_as_ftc
from ._source import SpecSource, json_path, read_spec_source
from .architectures import Architecture, known_architecture
from .llmforge import from_llmforge
from .model import (
    DeepSpeedSettings,
    EvalFrequency,
    Evaluation,
    GenerationConfig,
    JobSpec,
    Logger,
    LoraConfig,
    PromptFormat,
)
from .reading import MiB, read_bounded_text
from .schemas import apply_defaults, job_schema, lineage_schema, plan_schema, schema_problems, without_invalid_keys

__all__ = [
    "Architecture",
    "DeepSpeedSettings",
    "EvalFrequency",
    "Evaluation",
    "GenerationConfig",
    "JobSpec",
    "LoadedSpec",
    "Logger",
    "LoraConfig",
    "PromptFormat",
    "SpecSource",
    "job_schema",
    "json_path",
    "known_architecture",
    "lineage_schema",
    "load_spec",
    "plan_schema",
]


#: a spec is a page of settings: a file far larger than this is not one
SPEC_LIMIT = 1 * MiB


@dataclass
class LoadedSpec:
    """A spec file read and checked: the typed spec (None when too broken to build one), its source text with line
    numbers, and every problem found so far. The compiler adds its own problems before reporting them all."""

    spec: JobSpec | None
    source: SpecSource
    problems: list[Problem] = field(default_factory=list)
    #: the llmforge keys given, and what each became (``ftc.spec._llmforge_keys``): the plan's ``llmforge`` record
    llmforge: dict[str, Any] = field(default_factory=dict)

    def problem(self, at: tuple, message: str, hint: str = "", *, kind: str = "spec", value: Any = _UNSET) -> Problem:
        """A problem located at JSON path ``at`` of this spec (file and line filled in)."""
        return Problem(
            json_path(at), message, hint, file=self.source.name, line=self.source.line_of(at), value=value, kind=kind
        )

    def raise_if_problems(self) -> None:
        if self.problems:
            raise SpecInvalid(self.problems, self.source.name)


def load_spec(path: str | Path, *, remember_valid_in: Path | None = None) -> LoadedSpec:
    """Read, validate and normalize the spec at ``path``; collect (not raise) every problem in it.
    ``remember_valid_in``: a folder where a spec found valid is remembered, so validating it again is skipped.

    Raises :class:`SpecInvalid` only for text that cannot be parsed, and :class:`UsageError` for a file that cannot
    be read as a spec (missing, not a regular file, larger than SPEC_LIMIT, not UTF-8).
    """
    path = Path(path)
    text = read_bounded_text(path, limit=SPEC_LIMIT, what="spec", example="job.yaml")
    source = read_spec_source(text, path)
    problems = schema_problems(source, remember_in=remember_valid_in)
    data = without_invalid_keys(source.data, problems) if problems else source.data
    loaded = LoadedSpec(spec=None, source=source, problems=problems)
    if data is None or any(key not in data for key in job_schema()["required"]):
        return loaded  # too broken to type-check further; the schema problems say why
    taken, loaded.llmforge, found = taken_as_ftc(data, loaded.problem)
    loaded.problems += found
    loaded.spec = JobSpec.from_dict(apply_defaults(from_llmforge(taken)))
    loaded.problems += spec_problems(loaded.spec, source.data, loaded.problem, base_dir=source.base_dir)
    return loaded
