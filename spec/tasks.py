"""The tasks a spec may name, in one table: what each trains, which of llmforge's configs implies it, and which recipe
trains it. Everything that differs by task reads it here (the data reader, the compiler's checks and summary, the
tokenizer's masks, ``ftc data inspect``, the run log, the recipe table of the runtime), so a task is added in one
place and no module compares task names of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TASKS", "Task"]


@dataclass(frozen=True)
class Task:
    name: str
    #: what carries the loss, as ``ftc plan show`` says it
    loss: str
    #: what is trained and what is context, as ``ftc data inspect`` says it
    trains: str
    #: the trained tokens, as the run log names them ("..., 120 of them trained (3.1%, <this>)")
    trained_tokens: str
    #: every token of every example is trained: ``{"text": ...}`` lines are taken, a conversation needs no answer,
    #: and a conversation is rendered by the template only when the data has one
    every_token: bool = False
    #: llmforge's task config that implies the task when ``task`` is not written
    config: str | None = None
    #: each data line is a pair of conversations, chosen and rejected (``ftc.spec.chat_data.read_preference_pairs``)
    pairs: bool = False
    #: the recipe (``runtime/recipes/<recipe>.py``) that trains it; None: ftc does not train it
    recipe: str | None = "sft"
    #: why ftc does not train it, and what to do instead (where ``recipe`` is None)
    refused: tuple[str, str] | None = None


TASKS = {
    t.name: t
    for t in (
        Task(
            "instruction_tuning",
            loss="the loss on the assistant's turns (llmforge's default was causal_lm)",
            trains="the assistant turns are trained (marked); the rest is context",
            trained_tokens="the assistant turns",
        ),
        Task(
            "causal_lm",
            loss="the loss on every token",
            trains="every token of every example is trained (all marked): conversations as the template renders "
            'them, {"text": ...} lines as the tokenizer encodes them, its EOS appended',
            trained_tokens="every token",
            every_token=True,
        ),
        Task(
            "classification",
            loss="the loss on the final answer's label token only (and a line of categories after it)",
            trains="only the final answer's label token is trained (marked), each label one token, and a line of "
            "categories after it with its end of turn; the rest is context",
            trained_tokens="the label tokens",
            config="classifier_config",
        ),
        Task(
            "preference_tuning",
            loss="DPO on pairs: the final answers of each pair, chosen and rejected, compared with the reference "
            "model's",
            trains="each pair shares its prompt; its two final answers (chosen and rejected) are trained (marked), "
            "each with its end of turn; the prompt is context",
            trained_tokens="the final answers of each pair: chosen and rejected",
            config="preference_tuning_config",
            recipe="dpo",
            pairs=True,
        ),
        Task(
            "vision_language",
            loss="vision-language tuning",
            trains="vision-language tuning",
            trained_tokens="the assistant turns",
            config="vision_language_config",
            recipe=None,
            refused=(
                "vision-language tuning (llmforge's vision_language task) is not supported: ftc trains text-only "
                "language models",
                "remove task: vision_language and vision_language_config, and fine-tune a text-only model",
            ),
        ),
    )
}
