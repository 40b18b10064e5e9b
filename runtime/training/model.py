"""Load the model and tokenizer a plan names, and put a LoRA adapter on it (new or continued).

Weights load from safetensors only: a pickled checkpoint is refused, because unpickling runs code. Nothing here runs
code from a weights folder either: every loader of ftc (:func:`pretrained_tokenizer`, :func:`pretrained_config`,
:func:`pretrained_causal_lm`, :func:`pretrained_adapter`) first refuses a folder that holds Python files or a config
naming them (``auto_map``), then passes ``trust_remote_code=False`` (without it transformers asks on stdin).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.errors import DataInvalid, InputUnresolvable, UsageError
from ftc.spec import JobSpec
from ftc.spec.rope import RopeScaling
from ftc.stores.sources import SOURCES
from ftc.stores.weights_folder import refuse_code

from .label_tokens import add_label_tokens, grow_embeddings, trainable_token_targets

__all__ = [
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
]

#: model types Liger patches in place with the kernels ftc uses (RMSNorm, RoPE, SwiGLU)
_LIGER = {
    "llama": "apply_liger_kernel_to_llama",
    "mistral": "apply_liger_kernel_to_mistral",
    "qwen2": "apply_liger_kernel_to_qwen2",
}

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    tokenizer_source: str  # "base weights" | "adapter" | "hub"
    trainable_parameters: int
    total_parameters: int


def describe_mode(mode: str, own_weights: bool) -> str:
    base = "your own base weights" if own_weights else "the published base weights"
    return {
        "full": f"full-parameter fine-tuning of {base}",
        "lora-new": f"a new LoRA adapter on {base}",
        "lora-continue": f"continuing a LoRA adapter on {base}",
    }[mode]


def _no_code(source: Path | str, what: str) -> None:
    """A local folder must hold no code a loader could run (a model id's files are never trusted either: every
    loader below passes trust_remote_code=False, so transformers refuses them itself)."""
    if isinstance(source, Path):
        refuse_code(source, what)


#: how the inputs that are weights folders are named in messages
_FOLDERS = {"base_model": "the base weights", "adapter": "the adapter"}


def refuse_code_in_inputs(plan: Any, roles: set[str]) -> None:
    """The local weights folders among the inputs ``roles`` of ``plan`` must hold no code a loader could run: checked
    before they are verified or read (planted code is reported as what it is, not as a changed input)."""
    for role, what in _FOLDERS.items():
        item = plan.inputs.get(role)
        if role in roles and item is not None and SOURCES[item.source].on_disk and item.kind == "dir":
            folder = plan.locate(item.uri)
            if folder.is_dir():
                refuse_code(folder, what)


def _unloadable(source: Path | str, what: str, exc: Exception) -> InputUnresolvable:
    return InputUnresolvable(
        f"{source}: {what} could not be loaded: {exc}\n    fix: point at a folder saved by save_pretrained (or a "
        "model id whose files are in the Hugging Face cache)"
    )


def pretrained_tokenizer(source: Path | str, what: str = "the tokenizer") -> Any:
    """``AutoTokenizer.from_pretrained(source)`` that never runs code from ``source``."""
    from transformers import AutoTokenizer

    _no_code(source, what)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise _unloadable(source, what, exc) from None


def pretrained_config(source: Path | str, what: str = "the model config") -> Any:
    """``AutoConfig.from_pretrained(source)`` that never runs code from ``source``."""
    from transformers import AutoConfig

    _no_code(source, what)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise _unloadable(source, what, exc) from None


def pretrained_causal_lm(
    source: Path | str, what: str = "the weights", *, rope: RopeScaling | None = None, **options: Any
) -> Any:
    """``AutoModelForCausalLM.from_pretrained(source, **options)`` that never runs code from ``source``, with the
    RoPE scaling ``rope`` (a plan's, resolved) applied to its config. Its errors are the caller's to word (a run
    and a server say different things).

    The weights are read into memory, not mapped: a mapped file's tensors stay the file's pages, so a write to it
    after ``ftc run`` checked its bytes would change weights already loaded (frozen ones for the whole run). A
    shard's bytes are held once more while its tensors are made."""
    from transformers import AutoModelForCausalLM

    _no_code(source, what)
    if rope is not None:
        options["config"] = scaled_config(pretrained_config(source, what), rope)
    return AutoModelForCausalLM.from_pretrained(source, trust_remote_code=False, disable_mmap=True, **options)


def scaled_config(config: Any, rope: RopeScaling) -> Any:
    """``config`` with the RoPE scaling ``rope``: its ``rope_parameters`` (transformers 5's name for
    ``rope_scaling``) and the max_position_embeddings that goes with it; the model's rope_theta and partial rotary
    factor kept. Linear and dynamic scaling change no weights, so a config is all a scaled model differs by."""
    fields = rope.config_fields()
    before = dict(getattr(config, "rope_parameters", None) or {})
    kept = {k: before[k] for k in ("rope_theta", "partial_rotary_factor") if k in before}
    kept.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    config.rope_parameters = {**fields["rope"], **kept}
    config.max_position_embeddings = fields["max_position_embeddings"]
    return config


def pretrained_adapter(model: Any, adapter: Path, what: str = "the adapter", **options: Any) -> Any:
    """``PeftModel.from_pretrained(model, adapter, **options)`` that never runs code from ``adapter``."""
    from peft import PeftModel

    _no_code(adapter, what)
    return PeftModel.from_pretrained(model, adapter, trust_remote_code=False, **options)


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((folder / name).exists() for name in _TOKENIZER_FILES)


def _require_safetensors(folder: Path, what: str) -> None:
    if not any(folder.glob("*.safetensors")):
        raise InputUnresolvable(f"{folder}: no *.safetensors {what}; ftc never unpickles weights (*.bin, *.pt)")


def attention_for(spec: JobSpec, *, cuda: bool) -> str:
    """The attention kernel to load the model with. Packed samples never see each other: transformers masks them
    apart by their position ids restarting at 0 (block-diagonal for SDPA, block-sparse for FlexAttention, whose
    backward needs a GPU), and sdpa_varlen (runtime/training/attention.py) attends within each sample separately,
    its bounds computed once per batch: auto, on CPUs (one SDPA call per sample) and GPUs (PyTorch's varlen
    flash-attention kernel over the whole flat batch in bf16, else per sample). transformers' dense block-diagonal
    mask (``sdpa``) costs the whole row's attention and turns off SDPA's fused causal kernels."""
    if spec.attn_implementation == "flex_attention" and not cuda:
        raise UsageError(
            "attn_implementation: flex_attention trains only on GPUs (PyTorch has no FlexAttention backward on CPU)"
            "\n    fix: set attn_implementation: auto or sdpa"
        )
    if spec.attn_implementation != "auto":
        return spec.attn_implementation
    return "sdpa_varlen"


def kernels_for(spec: JobSpec, *, cuda: bool, model_type: str | None) -> str:
    """ "liger" or "torch": the kernels of the decoder's norms, rotary embedding and MLP activation. Compiled layers
    (``torch_compile``) take PyTorch's: compiling fuses those itself, and Liger's kernels are opaque to it (``ftc
    compile`` refuses ``kernels: liger`` with ``torch_compile``)."""
    import importlib.util

    if spec.kernels == "torch" or spec.torch_compile:
        return "torch"
    installed = importlib.util.find_spec("liger_kernel") is not None
    if spec.kernels == "liger":
        why = (
            "no GPU here"
            if not cuda
            else "liger-kernel is not installed (pip install 'ftc[gpu]')"
            if not installed
            else f"ftc applies them to {', '.join(sorted(_LIGER))} models, not {model_type!r}"
            if model_type not in _LIGER
            else None
        )
        if why:
            raise UsageError(
                f"kernels: liger needs an NVIDIA GPU, the liger-kernel package and a supported model: {why}"
                "\n    fix: set kernels: auto"
            )
        return "liger"
    return "liger" if cuda and installed and model_type in _LIGER else "torch"


def apply_liger(model: Any) -> None:
    """Liger's kernels for the decoder's norms, rotary embedding and MLP activation, patched into ``model`` in place.
    The loss is ftc's own (runtime/training/loss.py), so Liger's cross-entropy patches stay off."""
    import liger_kernel.transformers as liger

    getattr(liger, _LIGER[model.config.model_type])(
        rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=model
    )


def load_tokenizer(spec: JobSpec, base: Path | None, adapter: Path | None) -> tuple[Any, str]:
    """The tokenizer a run uses, and where it comes from: the base weights' folder, else the adapter's, else the
    published one of model_id ("base weights", "adapter", "hub")."""
    if base is not None and _has_tokenizer(base):
        return pretrained_tokenizer(base, "the base weights"), "base weights"
    if _has_tokenizer(adapter):
        return pretrained_tokenizer(adapter, "the adapter"), "adapter"
    return pretrained_tokenizer(spec.model_id, "the published tokenizer"), "hub"


def _kernel_for_weights(base: Path | str, attention: str) -> str:
    """``attention``, unless the model soft-caps its attention scores (Gemma 2), which SDPA cannot do: then
    transformers' eager attention, or ftc's per-sample kernel computing the scores itself."""
    if attention in ("sdpa", "sdpa_varlen") and getattr(
        pretrained_config(base, "the base weights"), "attn_logit_softcapping", None
    ):
        return {"sdpa": "eager", "sdpa_varlen": "varlen_softcap"}[attention]
    return attention


def load_model(
    spec: JobSpec,
    mode: str,
    base: Path | str,
    adapter: Path | None,
    *,
    dtype: Any,
    attention: str,
    kernels: str = "torch",
) -> LoadedModel:
    """The model to train, its weights in ``dtype``. ``base`` is a weights folder, or a model id for the published
    weights."""
    _no_code(base, "the base weights")  # every folder before anything of any is loaded
    if adapter is not None:
        _no_code(adapter, "the adapter")
    if isinstance(base, Path):
        _require_safetensors(base, "weights")
    attention = _kernel_for_weights(base, attention)
    if attention in ("sdpa_varlen", "varlen_softcap"):
        from .attention import register

        register()
    try:
        model = pretrained_causal_lm(
            base,
            "the base weights",
            rope=spec.rope_scaling,
            dtype=dtype,
            use_safetensors=True,
            attn_implementation=attention,
        )
    except (OSError, ValueError) as exc:  # a config transformers cannot read, an architecture it does not know
        raise _unloadable(base, "the base weights", exc) from None
    model.config.use_cache = False  # a KV cache disables the packed-sequence masks and costs memory in training
    if spec.activation_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the older name warns there
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if kernels == "liger":
        apply_liger(model)
    tokenizer, source = load_tokenizer(spec, base if isinstance(base, Path) else None, adapter)
    if spec.rope_scaling is not None:  # the length a tokenizer warns past, and the one its checkpoints carry
        tokenizer.model_max_length = spec.rope_scaling.max_positions
    labels = spec.classifier_config.label_tokens if spec.classifier_config is not None else ()
    added = add_label_tokens(tokenizer, labels)  # a classifier's labels, one token each
    rows = model.get_input_embeddings().weight.shape[0]
    if added or (labels and len(tokenizer) > rows):  # (a tokenizer that has the labels already: an adapter's)
        grow_embeddings(model, len(tokenizer), added)
    elif len(tokenizer) > rows:
        if not spec.resize_token_embeddings:
            raise DataInvalid(
                f"the tokenizer ({source}) has {len(tokenizer)} tokens but the model only {rows} embedding rows\n"
                "    fix: use the tokenizer these weights were trained with, or set resize_token_embeddings: true"
            )
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    new_rows = None  # a new adapter's trainable label rows (a continued one's config names its own)
    if added and mode == "lora-new":
        new_rows = trainable_token_targets(model, added, spec.lora_config.modules_to_save or ())
    model = _with_lora(model, spec, mode, base, adapter, new_rows)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return LoadedModel(model, tokenizer, source, trainable, total)


def _with_lora(
    model: Any, spec: JobSpec, mode: str, base: Path | str, adapter: Path | None, new_rows: dict | None = None
) -> Any:
    """``model`` with its LoRA adapter: a new one (lora-new), the given one to train on (lora-continue), or none.
    ``new_rows``: a new adapter's ``trainable_token_indices`` (a classifier's added labels); a continued one's config
    names its own."""
    if mode == "lora-new":
        from peft import LoraConfig, get_peft_model

        lora = spec.lora_config
        target = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.lora_alpha,
            lora_dropout=lora.lora_dropout,
            target_modules=target,
            modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
            bias=lora.bias,
            use_rslora=lora.use_rslora,
            use_dora=lora.use_dora,
            fan_in_fan_out=lora.fan_in_fan_out,
            init_lora_weights=lora.init_lora_weights,
            task_type="CAUSAL_LM",
            trainable_token_indices=new_rows,
        )
        model = get_peft_model(model, config)
    elif mode == "lora-continue":
        from peft import LoraConfig

        _require_safetensors(adapter, "adapter weights")
        config = LoraConfig.from_pretrained(adapter, trust_remote_code=False)
        config.lora_dropout = spec.lora_config.lora_dropout  # the one setting a continuation may change
        model = pretrained_adapter(model, adapter, "the adapter", is_trainable=True, config=config)
        if isinstance(base, Path):  # peft reads the base's config when saving: here, not a model hub (the adapter
            # names model_id there, which checkpoints keep; see checkpoint._name_base)
            model.peft_config["default"].base_model_name_or_path = str(base)
    return model


#: what transformers records in tokenizer_config.json about how the tokenizer was loaded, not what it is: it would
#: differ between two runs of one plan in different environments (HF_HUB_OFFLINE sets local_files_only), and a token
#: is a credential
LOADING_KWARGS = ("local_files_only", "cache_dir", "token", "use_auth_token", "proxies", "force_download", "revision")


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """``tokenizer.save_pretrained(folder)`` without the loading settings it picked up (LOADING_KWARGS)."""
    for key in LOADING_KWARGS:
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(folder)
