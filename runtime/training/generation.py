"""Generation as serving does it: the prompt a server renders (the conversation, then the generation prompt),
tokens one at a time with a KV cache, stopping at an end-of-sequence token or at any stop text, which is never part
of the answer. Greedy by default; sampling is seeded and draws on the CPU, so a seed repeats its answer (given the
same logits).

Used by ``ftc generate``, ``ftc eval`` and the evaluation of a run (``evaluation.generate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ftc.spec import PromptFormat

from .compiled import eager_layers
from .render import render_prompt_format
from .sandbox import render_template

__all__ = [
    "Answer",
    "Generated",
    "Sampling",
    "answer",
    "exact_match",
    "generate",
    "prompt_ids",
    "prompt_text",
    "stop_token_ids",
]


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 256
    #: 0: greedy (the most likely token at every step)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Generated:
    text: str
    tokens: int
    #: "stop" (an end-of-sequence token or a stop text) or "length" (max_new_tokens reached)
    finish_reason: str


def prompt_text(messages: list[dict[str, Any]], fmt: PromptFormat | None, tokenizer: Any) -> str:
    """What a server renders for ``messages`` before the model's answer: the conversation and the generation prompt
    (``trailing_assistant``, or the chat template's)."""
    if fmt is not None:
        return render_prompt_format(messages, fmt).text + fmt.trailing_assistant
    return render_template(tokenizer, messages, add_generation_prompt=True)


def prompt_ids(messages: list[dict[str, Any]], fmt: PromptFormat | None, tokenizer: Any) -> list[int]:
    """The token ids a server feeds the model for ``messages``: the prompt text tokenized whole."""
    return tokenizer(prompt_text(messages, fmt, tokenizer), add_special_tokens=False)["input_ids"]


def stop_token_ids(tokenizer: Any, stop_texts: list[str]) -> list[int]:
    """The end-of-sequence token and every stop text that is one token, as ids (what generation_config.json's
    ``eos_token_id`` lists for servers that stop on ids only)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for text in stop_texts:
        encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1 and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def exact_match(output: str, expected: str) -> bool:
    """Equal once whitespace is normalized (runs of whitespace are one space; none at either end)."""
    return " ".join(output.split()) == " ".join(expected.split())


@contextmanager
def _attention_for_decoding(model: Any) -> Iterator[None]:
    """Decoding with a KV cache needs an attention kernel that takes a query shorter than its keys: ftc's
    per-sample kernel (training's sdpa_varlen) and FlexAttention's block masks are swapped for SDPA meanwhile (for
    eager attention where the scores are soft-capped, which SDPA cannot do), and compiled layers run uncompiled."""
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    swap = {"sdpa_varlen": "sdpa", "flex_attention": "sdpa", "varlen_softcap": "eager"}.get(before)
    if swap:
        model.set_attn_implementation(swap)
    try:
        with eager_layers():  # compiled layers (torch_compile) decode uncompiled: a new shape every token
            yield
    finally:
        if swap:
            model.set_attn_implementation(before)


def _forward_keywords(model: Any) -> tuple[str, dict[str, Any]]:
    """The name the model's forward takes its KV cache by (transformers renamed ``past_key_values`` to ``cache``),
    and the argument that keeps only the last position's logits (a long prompt's would be length x vocabulary)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(type(base).forward).parameters
    return ("cache" if "cache" in parameters else "past_key_values"), (
        {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
    )


def _next_token(logits: Any, sampling: Sampling, generator: Any) -> int:
    import torch

    if sampling.temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float().cpu() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        ordered, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(ordered, dim=-1) - ordered < sampling.top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


def generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[int],
    *,
    stop_texts: list[str],
    stop_ids: list[int],
    sampling: Sampling,
    on_text: Callable[[str], None] | None = None,
    lockstep: bool = False,
) -> Generated:
    """The answer to ``prompt_ids``. ``on_text`` receives it piece by piece as it is generated (text that may be the
    start of a stop text is held back until it is not). ``lockstep``: run all ``max_new_tokens`` forward passes even
    after stopping, so that every process of a ZeRO-3 group joins each one."""
    import torch

    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(sampling.seed)
    hold = max((len(t) for t in stop_texts), default=1) - 1
    tokens: list[int] = []
    shown, text, finish = 0, "", "length"
    done = False
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    cache = None
    keyword, last_only = _forward_keywords(model)
    with torch.no_grad(), _attention_for_decoding(model):
        for _ in range(sampling.max_new_tokens):
            out = model(input_ids=ids, use_cache=True, **{keyword: cache}, **last_only)
            cache = out[keyword]
            token = _next_token(out.logits[0, -1], sampling, generator)
            ids = torch.tensor([[token]], dtype=torch.long, device=device)
            if done:
                continue  # lockstep: the answer is complete; the forward passes go on for the other processes
            if token in stop_ids:
                done, finish = True, "stop"
            else:
                tokens.append(token)
                text = tokenizer.decode(tokens, skip_special_tokens=False)
                cut = min((i for i in (text.find(s) for s in stop_texts) if i >= 0), default=-1)
                if cut >= 0:
                    text, done, finish = text[:cut], True, "stop"
            if on_text is not None:
                # hold back what may begin a stop text, or a character whose bytes are not all generated yet
                ready = len(text) if done else max(shown, len(text) - hold)
                while ready > shown and not done and text[ready - 1] == "\ufffd":
                    ready -= 1
                if ready > shown:
                    on_text(text[shown:ready])
                    shown = ready
            if done and not lockstep:
                break
    if on_text is not None and len(text) > shown:
        on_text(text[shown:])
    return Generated(text, len(tokens), finish)


@dataclass(frozen=True)
class Answer:
    expected: str
    generated: Generated

    @property
    def exact_match(self) -> bool:
        return exact_match(self.generated.text, self.expected)


def answer(
    model: Any,
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    fmt: PromptFormat | None,
    stop_texts: list[str],
    stop_ids: list[int],
    sampling: Sampling,
    lockstep: bool = False,
) -> Answer:
    """The model's answer in place of the last assistant turn of ``messages`` (the reference), given the turns
    before it, prompted as a server prompts."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids = prompt_ids(messages[:last], fmt, tokenizer)
    generated = generate(
        model, tokenizer, ids, stop_texts=stop_texts, stop_ids=stop_ids, sampling=sampling, lockstep=lockstep
    )
    return Answer(messages[last]["content"], generated)
