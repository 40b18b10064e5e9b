"""Cross-field checks that need only the spec itself (checks against inputs live in the compiler)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ftc.errors import Problem

from .folders import system_folder
from .llmforge import task_problems
from .model import JobSpec
from .text import redact

__all__ = ["spec_problems"]

PLACEHOLDER = "{instruction}"

ProblemAt = Callable[..., Problem]  # problem(path_tuple, message, hint, value=...)


def spec_problems(spec: JobSpec, raw: dict, problem: ProblemAt, base_dir: Path | None = None) -> list[Problem]:
    """Problems in ``spec`` that the schema cannot express. ``raw`` is the spec as written (before defaults),
    to tell a value the user set from a default. ``base_dir``: the spec's folder, where its relative paths start
    (None for a spec carried in a plan: its relative paths are checked as written).

    The one list of the compiler's checks on the spec's own fields: ``ftc compile`` runs it on the spec, and every
    plan reader on the spec a plan carries (``ftc.spec.plan_checks.plan_problems``)."""
    out: list[Problem] = []
    out += _output_dir(spec, problem, base_dir)
    out += _prompt_format(spec, problem)
    out += _training_mode(spec, problem)
    out += _topology(spec, problem)
    if spec.torch_compile and spec.kernels == "liger":
        out.append(
            problem(
                ("kernels",),
                "Liger's kernels are opaque to torch_compile, which fuses the same norms, rotary embedding and SwiGLU "
                "itself",
                "set kernels: auto (PyTorch's, compiled) or torch_compile: false",
                value="liger",
            )
        )
    out += _deepspeed(spec, raw, problem)
    out += _image(spec, problem)
    out += _logger(spec, problem)
    out += task_problems(spec, raw, problem)
    if spec.evaluation.generate and spec.valid_path is None:
        out.append(
            problem(
                ("evaluation", "generate"),
                "answers are generated for the validation examples, and there is no valid_path",
                "give valid_path, or set evaluation.generate: false",
                value=True,
            )
        )
    return out


# an image reference as container engines parse it: [host[:port]/]path[:tag][@algorithm:hex]
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = re.compile(
    rf"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])"
    rf"(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[0-9a-f]{{64}})?$"
)


#: the settings each tracker takes (the schema lists their union)
LOGGER_KEYS = {
    "mlflow": ("tracking_uri", "experiment_name", "run_name", "create_experiment_if_not_exists"),
    "wandb": ("project", "entity", "name", "group", "tags", "mode"),
    "tensorboard": ("log_dir",),
}


def _logger(spec: JobSpec, problem: ProblemAt) -> list[Problem]:
    logger = spec.logger
    if logger is None:
        return []
    out = []
    allowed = LOGGER_KEYS[logger.provider]
    for key in sorted(set(logger.provider_config) - set(allowed)):
        out.append(
            problem(
                ("logger", "provider_config", key),
                f"{logger.provider} does not take {key}",
                f"{logger.provider} takes: {', '.join(allowed)}",
            )
        )
    uri = logger.provider_config.get("tracking_uri", "")
    if isinstance(uri, str) and redact(uri) != uri:  # user-info of any shape (a password holding "/" or "@")
        out.append(
            problem(
                ("logger", "provider_config", "tracking_uri"),
                "the tracking URI holds credentials, which would be written into the plan and its checkpoints",
                "remove them from the URI and set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or "
                "MLFLOW_TRACKING_TOKEN in the environment",
                value=redact(uri),
            )
        )
    log_dir = logger.provider_config.get("log_dir")
    if log_dir is not None and (log_dir.startswith(("/", "~")) or ".." in log_dir.split("/")):
        out.append(
            problem(
                ("logger", "provider_config", "log_dir"),
                "the event files go inside the output folder",
                "give a folder relative to output_dir, such as tensorboard",
                value=log_dir,
            )
        )
    return out


def _output_dir(spec: JobSpec, problem: ProblemAt, base_dir: Path | None) -> list[Problem]:
    """The run writes into output_dir: never the root, the home folder or a system folder (``ftc.spec.folders``),
    and a relative path names a folder of its own (``../../runs/x``), not one of the spec's parents
    (``../../..``): climbing to a folder that far up is written as an absolute path."""
    out_dir = spec.output_dir
    if "://" in out_dir:  # a store prefix (checked with the inputs), or a scheme the compiler refuses
        return []
    path = os.path.expanduser(out_dir)
    fix = "name a folder for the run's own files, e.g. runs/NAME (or an absolute path of your own)"
    if not os.path.isabs(path):
        parts = os.path.normpath(path).split(os.sep)
        if parts[0] == ".." and all(part == ".." for part in parts):
            return [
                problem(
                    ("output_dir",),
                    "climbs out of the spec's folder into one of its parents (the run would write its checkpoints "
                    "among everything there)",
                    fix,
                    value=out_dir,
                )
            ]
        if base_dir is None:
            return []
        path = os.path.join(base_dir, path)
    why = system_folder(path)
    if why is None:
        return []
    return [problem(("output_dir",), f"{why}: a run writes only into a folder of its own", fix, value=out_dir)]


def _image(spec: JobSpec, problem: ProblemAt) -> list[Problem]:
    if spec.image is None or (len(spec.image) <= 255 and _IMAGE_REFERENCE.match(spec.image)):
        return []
    return [
        problem(
            ("image",),
            "not an image reference",
            "write repository:tag or repository@sha256:<digest> (lowercase repository, e.g. ftc-runtime:0.1.0-cpu)",
            value=spec.image,
        )
    ]


def _prompt_format(spec: JobSpec, problem: ProblemAt) -> list[Problem]:
    fmt = spec.generation_config.prompt_format
    if fmt is None:
        return []
    out = []
    for role in ("system", "user", "assistant"):
        template = getattr(fmt, role)
        if PLACEHOLDER not in template:
            out.append(
                problem(
                    ("generation_config", "prompt_format", role),
                    f"the {role} template has no {PLACEHOLDER} placeholder, "
                    f"so the {role} message content would be dropped",
                    f'put {PLACEHOLDER} where the content goes, e.g. "{template}{PLACEHOLDER}"',
                    value=template,
                )
            )
    if fmt.system_in_user and "{system}" not in fmt.user:
        out.append(
            problem(
                ("generation_config", "prompt_format", "user"),
                "system_in_user is true but the user template has no {system} placeholder for the system message",
                'put {system} where the system message goes, e.g. "[INST] {system}{instruction} [/INST]"',
                value=fmt.user,
            )
        )
    return out


def _training_mode(spec: JobSpec, problem: ProblemAt) -> list[Problem]:
    out = []
    adapter = spec.initial_adapter_model_ckpt_path
    if spec.training_mode == "full":
        if spec.lora_config is not None:
            out.append(
                problem(
                    ("lora_config",),
                    "lora_config is given but training_mode is full (full-parameter training uses no adapter)",
                    "remove lora_config for full-parameter training, or set training_mode: lora",
                )
            )
        if adapter is not None:
            out.append(
                problem(
                    ("initial_adapter_model_ckpt_path",),
                    "full-parameter training cannot continue from a LoRA adapter",
                    "continue the adapter with training_mode: lora, or merge the adapter into its base weights and "
                    "give those as initial_base_model_ckpt_path",
                    value=adapter,
                )
            )
    if spec.training_mode == "lora" and spec.lora_config is None and adapter is None:
        out.append(
            problem(
                ("training_mode",),
                "training_mode is lora but there is neither lora_config nor initial_adapter_model_ckpt_path",
                "add lora_config (for example {r: 8, lora_alpha: 16}) or an adapter to continue",
                value="lora",
            )
        )
    return out


def _topology(spec: JobSpec, problem: ProblemAt) -> list[Problem]:
    if spec.num_devices % spec.num_nodes:
        return [
            problem(
                ("num_devices",),
                f"{spec.num_devices} devices cannot be split evenly over {spec.num_nodes} nodes",
                "make num_devices a multiple of num_nodes "
                f"(for example {spec.num_nodes * max(1, spec.num_devices // spec.num_nodes)})",
                value=spec.num_devices,
            )
        ]
    return []


def _deepspeed(spec: JobSpec, raw: dict, problem: ProblemAt) -> list[Problem]:
    ds = spec.deepspeed
    out = []
    written = raw.get("deepspeed") if isinstance(raw.get("deepspeed"), dict) else {}
    if ds.config_path is not None:
        for key in ("zero_stage", "offload_optimizer", "offload_param"):
            if key in written:
                out.append(
                    problem(
                        ("deepspeed", key),
                        f"{key} is set here and also comes from config_path",
                        f"set {key} in the DeepSpeed config file, or drop config_path",
                        value=written[key],
                    )
                )
        return out
    if ds.offload_param and ds.zero_stage != 3:
        out.append(
            problem(
                ("deepspeed", "offload_param"),
                f"parameter offload needs ZeRO stage 3 (zero_stage is {ds.zero_stage})",
                "set zero_stage: 3, or offload_param: false",
                value=True,
            )
        )
    if ds.offload_optimizer and ds.zero_stage == 0:
        out.append(
            problem(
                ("deepspeed", "offload_optimizer"),
                "optimizer offload needs ZeRO stage 1, 2 or 3 (zero_stage is 0)",
                "set zero_stage to 1 or more, or offload_optimizer: false",
                value=True,
            )
        )
    return out
