"""The typed job spec: frozen dataclasses built once from the validated, normalized spec.

Field meanings and defaults live in job.schema.json (and docs/spec.md, generated from it); a test keeps these
classes and the schema in step. Everything after loading takes these objects or their fields, never the raw dict.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from .rope import RopeScaling

__all__ = [
    "ClassifierConfig",
    "DeepSpeedSettings",
    "DvcLocation",
    "DvcRef",
    "Location",
    "EvalFrequency",
    "Evaluation",
    "GenerationConfig",
    "JobSpec",
    "Logger",
    "LoraConfig",
    "OPTIONAL_KEYS",
    "PreferenceConfig",
    "PromptFormat",
    "RAY_RESOURCE_KEYS",
    "ReferencePass",
    "RopeScaling",
]


#: the spec's Ray resource requests: absent from a normalized spec when empty
RAY_RESOURCE_KEYS = ("worker_resources", "trainer_resources")
#: settings absent from a normalized spec when not given, empty or false (a spec without them keeps its plan_id)
OPTIONAL_KEYS = (*RAY_RESOURCE_KEYS, "classifier_config", "preference_tuning_config", "torch_compile")
#: the task configs, None in a typed spec whose task has none
TASK_CONFIG_KEYS = ("classifier_config", "preference_tuning_config")


@dataclass(frozen=True)
class DvcRef:
    """A path tracked by DVC in a git repository at a revision (None: the spec's own repository; HEAD)."""

    path: str
    repo: str | None
    rev: str | None
    remote: str | None


@dataclass(frozen=True)
class DvcLocation:
    dvc: DvcRef


#: where an input is: a local path or s3:// / gs:// URI, or a path tracked by DVC
Location = str | DvcLocation


@dataclass(frozen=True)
class PromptFormat:
    """Templates that wrap each message; ``{instruction}`` is replaced by the message content. The defaults are the
    schema's (for building one in code; a spec gets them from the schema)."""

    user: str
    assistant: str
    system: str = "{instruction}"
    trailing_assistant: str = ""
    bos: str = ""
    system_in_user: bool = False
    default_system_message: str = ""
    add_system_tags_even_if_message_is_empty: bool = False
    strip_whitespace: bool = True


@dataclass(frozen=True)
class GenerationConfig:
    prompt_format: PromptFormat | None
    stopping_sequences: tuple[str, ...]


@dataclass(frozen=True)
class LoraConfig:
    """peft.LoraConfig fields; ``target_modules`` is a tuple of names or one regular expression string."""

    r: int
    lora_alpha: float
    lora_dropout: float
    target_modules: tuple[str, ...] | str
    modules_to_save: tuple[str, ...] | None
    bias: Literal["none", "all", "lora_only"]
    use_rslora: bool
    use_dora: bool
    fan_in_fan_out: bool
    init_lora_weights: bool | str
    task_type: Literal["CAUSAL_LM"]


@dataclass(frozen=True)
class ClassifierConfig:
    """A classifier's labels (in order: the classes' indices) and the metrics recorded each evaluation."""

    label_tokens: tuple[str, ...]
    eval_metrics: tuple[Literal["prauc", "accuracy", "f1"], ...]


@dataclass(frozen=True)
class ReferencePass:
    """The reference model's log-probabilities of every pair's answers, computed once before preference tuning
    (llmforge's ``logprob_processor_scaling_config``)."""

    #: how many workers compute them
    concurrency: int
    #: pairs per forward pass (None: the spec's eval_batch_size_per_device)
    batch_size: int | None
    #: Ray resources each worker asks for (name -> amount); {} when none
    custom_resources: dict[str, float]


@dataclass(frozen=True)
class PreferenceConfig:
    """Preference tuning's (DPO's) settings."""

    #: how far the trained model may move from the reference (the loss scales the margin by it); > 0
    beta: float
    #: sigmoid: DPO's loss; ipo: the IPO loss
    loss_type: Literal["sigmoid", "ipo"]
    #: the reference pass (the spec's key is llmforge's: logprob_processor_scaling_config)
    reference: ReferencePass = field(metadata={"key": "logprob_processor_scaling_config"})


@dataclass(frozen=True)
class DeepSpeedSettings:
    config_path: str | None
    zero_stage: int
    offload_optimizer: bool
    offload_param: bool


@dataclass(frozen=True)
class Logger:
    """An experiment tracker: its provider, settings (keys per provider; credentials never) and what an unreachable
    one does."""

    provider: Literal["mlflow", "wandb", "tensorboard"]
    provider_config: dict[str, Any]
    if_unreachable: Literal["fail", "warn"]


@dataclass(frozen=True)
class Evaluation:
    generate: bool
    max_new_tokens: int


@dataclass(frozen=True)
class EvalFrequency:
    unit: Literal["epochs", "steps"]
    frequency: int


@dataclass(frozen=True)
class JobSpec:
    """A validated job spec with every default filled in. Paths are as written (relative to the spec file)."""

    spec_version: int
    model_id: str
    initial_base_model_ckpt_path: Location | None
    initial_adapter_model_ckpt_path: Location | None
    train_path: Location
    valid_path: Location | None
    generation_config: GenerationConfig
    num_epochs: int
    learning_rate: float
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    num_warmup_steps: int
    weight_decay: float
    max_grad_norm: float | None
    train_batch_size_per_device: int
    eval_batch_size_per_device: int
    gradient_accumulation_steps: int
    #: None until the compiler knows the model's maximum (then min(2048, max_position_embeddings))
    context_length: int | None
    #: resolved by the compiler against the model (every value filled in)
    rope_scaling: RopeScaling | None
    padding: Literal["longest", "max_length"]
    skip_bad_examples: bool
    resize_token_embeddings: bool
    sample_packing: bool
    attn_implementation: Literal["auto", "sdpa", "sdpa_varlen", "flex_attention", "eager"]
    activation_checkpointing: bool
    #: each decoder layer compiled by torch.compile (runtime/training/compiled.py); absent from a normalized spec
    #: when false (a spec without it keeps its plan_id)
    torch_compile: bool
    kernels: Literal["auto", "liger", "torch"]
    num_devices: int
    num_nodes: int
    training_mode: Literal["auto", "full", "lora"]
    #: which tokens carry the loss (instruction_tuning: the assistant's; causal_lm: every token)
    task: Literal["instruction_tuning", "causal_lm", "classification", "preference_tuning", "vision_language"]
    lora_config: LoraConfig | None
    #: task classification's labels and metrics (None for the other tasks; then left out of the normalized spec)
    classifier_config: ClassifierConfig | None
    #: task preference_tuning's settings (None for the other tasks; then left out of the normalized spec)
    preference_tuning_config: PreferenceConfig | None
    deepspeed: DeepSpeedSettings
    precision: Literal["auto", "bf16", "fp32"]
    evaluation: Evaluation
    checkpoint_and_evaluation_frequency: EvalFrequency
    num_checkpoints_to_keep: int | None
    seed: int
    output_dir: str
    image: str | None
    logger: Logger | None
    #: Ray resources per training worker, and llmforge's trainer's (name -> amount); {} when none, and then left out
    #: of the normalized spec (a spec without them keeps its plan_id)
    worker_resources: dict[str, float]
    trainer_resources: dict[str, float]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Build from a normalized spec (schema-valid, defaults applied)."""
        absent = {**{key: {} for key in RAY_RESOURCE_KEYS}, **{key: None for key in TASK_CONFIG_KEYS}}
        absent["torch_compile"] = False
        return _build(cls, {**absent, **data})

    def to_dict(self) -> dict[str, Any]:
        """The normalized spec as plain JSON data (tuples become lists; no Ray resources or task config: no such
        key)."""
        out = _plain(self)
        return {k: v for k, v in out.items() if v or k not in OPTIONAL_KEYS}

    def replace(self, **changes: Any) -> JobSpec:
        return dataclasses.replace(self, **changes)

    def given_locations(self) -> dict[str, str]:
        """Each input role's location as the spec's author wrote it, for people: a path (relative to the spec), a
        URI, or ``dvc:PATH@REV`` (``in REPO``)."""
        found = {
            "base_model": self.initial_base_model_ckpt_path,
            "adapter": self.initial_adapter_model_ckpt_path,
            "train": self.train_path,
            "valid": self.valid_path,
        }
        return {role: _written(value) for role, value in found.items() if value is not None}

    @property
    def processes_per_node(self) -> int:
        return self.num_devices // self.num_nodes

    @property
    def global_batch_size(self) -> int:
        return self.train_batch_size_per_device * self.gradient_accumulation_steps * self.num_devices


def _written(location: Location) -> str:
    if isinstance(location, str):
        return location
    ref = location.dvc
    return f"dvc:{ref.path}@{ref.rev or 'HEAD'}" + (f" in {ref.repo}" if ref.repo else "")


def _key(f: dataclasses.Field) -> str:
    """A field's key in the spec: its name, unless its metadata names llmforge's key for it."""
    return f.metadata.get("key", f.name)


def _build(cls: type, data: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        kwargs[f.name] = _convert(hints[f.name], data[_key(f)])
    return cls(**kwargs)


def _convert(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    for option in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return _build(option, value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_key(f): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
