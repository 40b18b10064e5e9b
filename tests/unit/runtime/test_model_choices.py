"""Which attention and kernels a run gets: the automatic choices, and clear errors for impossible ones."""

from __future__ import annotations

import dataclasses

import pytest

from ftc.errors import UsageError
from ftc.runtime.training.model import attention_for, kernels_for


@dataclasses.dataclass
class Spec:  # the fields the choices read
    attn_implementation: str = "auto"
    sample_packing: bool = True
    kernels: str = "auto"
    torch_compile: bool = False


def test_automatic_attention():
    # ftc's varlen attention everywhere, packed or not: no dense row x row mask (on GPUs one varlen kernel call)
    for cuda in (True, False):
        assert attention_for(Spec(), cuda=cuda) == attention_for(Spec(sample_packing=False), cuda=cuda) == "sdpa_varlen"
    assert attention_for(Spec(attn_implementation="eager"), cuda=True) == "eager"


def test_flex_attention_needs_a_gpu():
    with pytest.raises(UsageError, match="flex_attention trains only on GPUs"):
        attention_for(Spec(attn_implementation="flex_attention"), cuda=False)


@pytest.mark.parametrize("installed", [True, False])
def test_automatic_kernels_are_liger_only_where_they_apply(monkeypatch, installed):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if installed else None)
    assert kernels_for(Spec(), cuda=True, model_type="llama") == ("liger" if installed else "torch")
    assert kernels_for(Spec(), cuda=True, model_type="gpt2") == "torch"
    assert kernels_for(Spec(), cuda=False, model_type="llama") == "torch"
    assert kernels_for(Spec(kernels="torch"), cuda=True, model_type="llama") == "torch"
    # compiled layers fuse the norms, rotary embedding and SwiGLU themselves; Liger's kernels are opaque to compiling
    assert kernels_for(Spec(torch_compile=True), cuda=True, model_type="llama") == "torch"


def test_liger_kernels_asked_for_where_they_cannot_run_are_a_usage_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    with pytest.raises(UsageError, match="not 'gpt2'"):
        kernels_for(Spec(kernels="liger"), cuda=True, model_type="gpt2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match=r"liger-kernel is not installed \(pip install 'ftc\[gpu\]'\)"):
        kernels_for(Spec(kernels="liger"), cuda=True, model_type="llama")
