"""The training library: the pieces a recipe (``ftc.runtime.recipes``) is written with, each in a module of its own.

A recipe imports its names from here (``from ftc.runtime.training import collate, load_model, TokenLoss``) or from
the module that holds them; both are public. Nothing here imports the launch layer (``ftc.runtime.launch``), and
importing this package loads none of its modules: each name is imported when first asked for, so the chat template
(serving's prompt format) costs no torch.

- ``render``, ``sandbox``, ``chat_template``: an example as the prompt format or the model's chat template writes it
- ``tokens``: tokenizing, with the mask of the tokens trained on, cached per input file
- ``batches``: epochs, shards and packed batches
- ``loss``, ``step``: the token loss (and the fused linear cross-entropy); one optimizer step of it, queued
- ``model``, ``attention``, ``compiled``: loading weights and tokenizers without running their code; attention and
  kernels; decoder layers compiled (``torch_compile``)
- ``distributed``, ``engine``, ``checkpoint``, ``state_file``: the process group; DeepSpeed with the optimizer and
  schedule; checkpoints, their state (DeepSpeed's in safetensors and JSON) and resuming
- ``preflight``, ``inputs``, ``data``: the checks before training, the plan's inputs verified, its data tokenized
- ``evaluation``, ``summary``: evaluation during training (token loss, exact match); the run's summary
- ``loop``, ``startup``: what every recipe's ``train`` does around its own step and data: the model loaded, the
  state, resuming, the epochs, checkpoints, the last words
- ``preference``, ``reference``: preference pairs, answer log-probabilities, the DPO/IPO losses; the reference
  model's log-probabilities, computed once and cached
- ``classification``: a classifier's evaluation (label probabilities from one forward pass; accuracy, P/R/F1, PR-AUC)
- ``label_tokens``: a classifier's labels as one token each (added, their embedding rows grown and trained)
- ``progress``, ``trackers``: what a run prints and logs, experiment trackers
- ``generation``, ``inspect``: generation as serving does it; ``ftc data inspect``
"""

from __future__ import annotations

import importlib
from typing import Any

#: module -> the names it gives the library
_MODULES = {
    "attention": ("VARLEN", "register", "sdpa_varlen", "varlen_kernel"),
    "batches": ("IGNORE", "Batch", "Row", "SampleBounds", "collate", "epoch_rows", "group", "shard_rows", "to_device"),
    "cache_files": ("CacheEntry", "read_cache_file", "store_cache_file"),
    "chat_template": ("stop_texts",),  # chat_template() is ``chat_template.chat_template`` (the module's name)
    "compiled": ("RECOMPILE_LIMIT", "compile_layers", "eager_layers"),
    "classification": (
        "METRICS",
        "Classified",
        "answer_positions",
        "classification_metrics",
        "evaluate_classifier",
        "label_probabilities",
    ),
    "checkpoint": (
        "Checkpointer",
        "checkpoint_sizes",
        "describe_sizes",
        "finished_checkpoints",
        "frozen_left_out",
        "is_complete",
        "latest_checkpoint",
        "load_training_state",
        "read_state",
        "restore_rng",
        "stable_adapter_config",
        "trained_seconds",
    ),
    "data": ("DATA_ROLES", "conversations_at", "data_cache", "describe_data", "load_data"),
    "distributed": ("Dist", "init_distributed"),
    "engine": (
        "OptimizerChoice",
        "build_engine",
        "choose_optimizer",
        "engine_config",
        "optimizer_path",
        "training_dtype",
        "training_precision",
    ),
    "evaluation": ("exact_match_share", "mean_token_loss"),
    "generation": (
        "Answer",
        "Generated",
        "Sampling",
        "answer",
        "exact_match",
        "generate",
        "prompt_ids",
        "prompt_text",
        "stop_token_ids",
    ),
    "inputs": ("FoundInputs", "materialize_remote", "verify_inputs"),
    "inspect": ("inspect_data",),
    "loop": (
        "RecipeRun",
        "TrainState",
        "already_complete",
        "epoch_steps",
        "finish_run",
        "log_step",
        "quiet_library_warnings",
        "resume_state",
        "run_epochs",
        "save_checkpoint",
        "training_session",
    ),
    "loss": ("CHUNK_ELEMENTS", "TokenLoss", "linear_cross_entropy", "linear_log_probs"),
    "model": (
        "LoadedModel",
        "apply_liger",
        "attention_for",
        "describe_mode",
        "kernels_for",
        "load_model",
        "load_tokenizer",
        "pretrained_adapter",
        "pretrained_causal_lm",
        "pretrained_config",
        "pretrained_tokenizer",
        "refuse_code_in_inputs",
        "save_tokenizer",
    ),
    "label_tokens": ("add_label_tokens", "classifier_record", "grow_embeddings", "trainable_token_targets"),
    "preference": (
        "PairBatch",
        "Pairs",
        "answer_logps",
        "collate_pairs",
        "load_pairs",
        "pair_batch",
        "pair_metrics",
        "preference_loss",
        "preference_step",
    ),
    "preflight": ("Checked", "check_run"),
    "progress": (
        "CLASSIFIER_SCALARS",
        "EVAL_SCALARS",
        "PREFERENCE_SCALARS",
        "EVERY_S",
        "ByteProgress",
        "CountProgress",
        "MetricsLog",
        "Progress",
        "byte_progress",
        "duration",
        "log",
        "size_text",
    ),
    "reference": ("Reference", "check_reference", "reference_cache", "reference_logps"),
    "render": ("PLACEHOLDER", "Rendered", "render_chat_template", "render_prompt_format", "renderer_for"),
    "resume": ("ResumePoint", "resume_point"),
    "sandbox": ("TemplateRefused", "render_template"),
    "state_file": (
        "FORMAT",
        "NotStateFile",
        "checkpoint_engine",
        "deepspeed_view",
        "read_state_file",
        "write_state_file",
    ),
    "step": ("Prefetched", "StepLoss", "train_step"),
    "startup": ("Loaded", "execution_of", "load_for_training", "new_checkpointer", "open_reporting"),
    "threads": ("CpuThreads", "choose_cpu_threads", "use_cpu_threads"),
    "summary": ("RunSummary", "eval_table", "eval_text", "matched_text", "write_summary"),
    "tokens": (
        "BadExample",
        "Examples",
        "label_token_ids",
        "token_cache",
        "tokenize_file",
        "trained_mask",
        "usable_examples",
    ),
    "trackers": (
        "TRACKER_FILE",
        "Tracker",
        "check_tracker",
        "interrupted_run",
        "open_tracker",
        "redact_library_logs",
        "tracker_metrics",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted([*_MODULES, *_HOME])


def __getattr__(name: str) -> Any:
    # each module on first use: torch, transformers and deepspeed load only with the pieces that need them
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
