"""`ftc data inspect`: the data as a run sees it (same rendering, same tokens, same cache), trained text marked,
statistics over the whole file, and warnings about what would train something serving does not produce."""

from __future__ import annotations

import json

from ftc.errors import ExitCode

from support.models import PROMPT_FORMAT, arithmetic_examples, write_jsonl

GUARD_FORMAT = {
    "system": "{instruction}",
    "user": "[INST] {instruction} [/INST]",
    "assistant": " {instruction}",  # a space before the label, and no end of turn after it
    "trailing_assistant": " ",
    "bos": "<s>",
}


def _guard_data(path, n: int = 12):
    write_jsonl(
        path,
        [
            {"messages": [{"role": "user", "content": f"is message {i} harmful?"}, {"role": "assistant", "content": a}]}
            for i, a in zip(range(n), ["safe", "unsafe"] * n)
        ],
    )


def test_the_examples_are_shown_as_trained_with_statistics_and_no_warning_for_a_sound_format(job, ftc, tmp_path):
    spec = job(generation_config={"prompt_format": PROMPT_FORMAT})
    r = ftc("data", "inspect", spec, "-n", "2", "--no-color")
    assert r.code == 0, r.err
    first = arithmetic_examples(16, seed=1)[0]["messages"]
    question, answer = first[-2]["content"], first[-1]["content"]
    assert "--- data/train.jsonl:1 (" in r.out
    assert f"<s><|user|>\n{question}</s>\n<|assistant|>\n⟦{answer}</s>\n⟧" in r.out  # exactly what is trained
    assert "marks: trained text ⟦between these⟧; in the data, control characters and ⟦ ⟧ ¦ are shown escaped" in r.out
    assert r.out.count("--- data/train.jsonl:") == 2
    assert "examples: 16 (0 bad)" in r.out and "trained " in r.out and "(context_length 64)" in r.out
    assert "packing (off): 16 examples would fill" in r.out
    assert r.out.rstrip().endswith("no warnings")


def test_the_same_report_from_the_plan_with_token_boundaries_and_the_valid_split(job, ftc, tmp_path):
    assert ftc("compile", job(generation_config={"prompt_format": PROMPT_FORMAT}), "-o", tmp_path / "p.json").code == 0
    r = ftc("data", "inspect", tmp_path / "p.json", "--split", "valid", "-n", "1", "--boundaries", "--no-color")
    assert r.code == 0, r.err
    assert "valid: data/valid.jsonl" in r.out and "examples: 4 (0 bad)" in r.out
    assert "<s>¦<|user|>¦" in r.out and "¦</s>¦" in r.out  # one '¦' between tokens
    assert "trained text ⟦between these⟧, a ¦ between tokens;" in r.out


def _guard_weights(tiny_model, folder):
    """The tiny model with a byte-level tokenizer that knows ' safe' as one token and adds <s> when it encodes."""
    import shutil

    from tokenizers import Tokenizer, processors

    from support.models import build_tokenizer

    shutil.copytree(tiny_model, folder)
    corpus = ["[INST] is message 1 harmful? [/INST] safe unsafe safe unsafe"] * 50
    build_tokenizer(folder, vocab_size=300, corpus=corpus)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_a_format_that_trains_something_serving_will_not_see_is_warned_about(job, ftc, tmp_path, tiny_model):
    _guard_weights(tiny_model, tmp_path / "guard-weights")
    _guard_data(tmp_path / "data" / "guard.jsonl")
    long = {
        "messages": [{"role": "user", "content": "is this harmful? " * 40}, {"role": "assistant", "content": "safe"}]
    }
    with open(tmp_path / "data" / "guard.jsonl", "a") as f:
        f.write(json.dumps(long) + "\nnot json\n")
    spec = job(
        initial_base_model_ckpt_path=str(tmp_path / "guard-weights"),
        train_path="data/guard.jsonl",
        generation_config={"prompt_format": GUARD_FORMAT},
        skip_bad_examples=True,
    )
    r = ftc("data", "inspect", spec, "-n", "1", "--color")
    assert r.code == 0, r.err
    assert "\x1b[1;32m" in r.out  # trained text in colour
    assert "examples: 13 (1 bad)" in r.out
    assert "warning: the assistant template has no end-of-turn text after {instruction}" in r.out
    assert "\x1b[1;32m safe\x1b[0m" in r.out or "\x1b[1;32m safe" in r.out  # the label's token, space and all
    assert "warning: the answers' first tokens begin with ' ' from the template" in r.out
    assert "end trailing_assistant before ' '" in r.out
    assert "warning: prompt_format.bos is '<s>' and the tokenizer adds '<s>' itself when it encodes" in r.out
    assert "warning: 1 example(s) longer than context_length 64 (data/guard.jsonl:13)" in r.out
    assert "warning: 1 bad example(s), which a run stops on (or skips with skip_bad_examples): " in r.out
    assert "data/guard.jsonl:14: not valid JSON" in r.out


def test_the_marks_cannot_be_confused_with_llama_guard_brackets_or_the_marks_own_glyphs_in_the_data(
    job, ftc, tmp_path, tiny_model
):
    """Llama Guard's prompt is full of plain brackets ([INST], [/INST]); data may hold anything, the marks' own
    glyphs too: without colour, every ⟦ ⟧ ¦ on the screen is ftc's, and the data's are shown escaped."""
    _guard_weights(tiny_model, tmp_path / "guard-weights")
    question = "is [this] ⟦harmful⟧ | ¦ or [/INST] not?"
    write_jsonl(
        tmp_path / "data" / "guard.jsonl",
        [{"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "unsafe [S1]"}]}] * 4,
    )
    spec = job(
        initial_base_model_ckpt_path=str(tmp_path / "guard-weights"),
        train_path="data/guard.jsonl",
        generation_config={"prompt_format": {**GUARD_FORMAT, "assistant": " {instruction}</s>"}},
    )
    r = ftc("data", "inspect", spec, "-n", "1", "--no-color")
    assert r.code == 0, r.err
    example = r.out.split("--- data/guard.jsonl:1 (", 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
    assert example == (
        "<s>[INST] is [this] \\u27e6harmful\\u27e7 | \\u00a6 or [/INST] not? [/INST]⟦ unsafe [S1]</s>⟧"
    ), example  # the data's brackets and bars as they are, its mark glyphs escaped, the answer marked once
    shown = ftc("data", "inspect", spec, "-n", "1", "--no-color", "--boundaries").out
    example = shown.split("--- data/guard.jsonl:1 (", 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
    assert example.count("⟦") == example.count("⟧") == 1 and "\\u00a6" in example
    assert example.replace("¦", "") == (
        "<s>[INST] is [this] \\u27e6harmful\\u27e7 | \\u00a6 or [/INST] not? [/INST]⟦ unsafe [S1]</s>⟧"
    )  # the boundaries are the only ¦ written


def test_a_split_the_plan_has_no_data_for_is_a_usage_error(job, ftc, tmp_path):
    r = ftc("data", "inspect", job(valid_path=None), "--split", "valid")
    assert r.code == ExitCode.USAGE
    assert "--split valid: the plan has no valid data (it has: train)" in r.err


def test_data_written_while_inspect_reads_it_is_refused(job, ftc, tmp_path, monkeypatch):
    import ftc.runtime.training.inspect as inspect

    from support.writes import written_after

    assert ftc("compile", job(), "-o", tmp_path / "p.json").code == 0
    written_after(monkeypatch, inspect, "tokenize_file", tmp_path / "data" / "train.jsonl")
    r = ftc("data", "inspect", tmp_path / "p.json", "-n", "1")
    assert r.code == ExitCode.INPUT_CHANGED and "an input changed while ftc read it" in r.err
    assert f"    train: {tmp_path / 'data' / 'train.jsonl'}\n" in r.err and "---" not in r.out


def test_only_the_tokenizer_and_the_data_are_read_and_they_are_verified(job, ftc, tmp_path, tiny_model):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "weights")
    assert ftc("compile", job(initial_base_model_ckpt_path="weights"), "-o", tmp_path / "p.json").code == 0
    weights = tmp_path / "weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # a run would refuse these; inspect never reads them
    assert ftc("data", "inspect", tmp_path / "p.json", "-n", "0").code == 0
    tokenizer = tmp_path / "weights" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text().replace('"<pad>"', '"<PAD>"', 1))
    r = ftc("data", "inspect", tmp_path / "p.json", "-n", "0")
    assert r.code == ExitCode.INPUT_CHANGED and "tokenizer.json changed since the plan was compiled" in r.err
    tokenizer.write_text(tokenizer.read_text().replace('"<PAD>"', '"<pad>"', 1))
    assert ftc("data", "inspect", tmp_path / "p.json", "-n", "0").code == 0
    (tmp_path / "weights" / "added_tokens.json").write_text("{}")  # a file a tokenizer reads, not pinned
    r = ftc("data", "inspect", tmp_path / "p.json", "-n", "0")
    assert r.code == ExitCode.INPUT_CHANGED and "    added_tokens.json: not in the plan\n" in r.err


def _weights_with_template(tiny_model, folder, template: str):
    import shutil

    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").write_text(template)
    return folder


def test_a_chat_template_that_would_loop_for_hours_stops_inspect_and_run_in_seconds(job, ftc, tmp_path, tiny_model):
    import time

    nested = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    _weights_with_template(tiny_model, tmp_path / "weights", nested)
    spec = job(initial_base_model_ckpt_path="weights", output_dir="out")
    started = time.monotonic()
    r = ftc("data", "inspect", spec, "-n", "1")
    assert r.code == ExitCode.DATA_INVALID, r.err
    assert time.monotonic() - started < 60  # it ran past 60 s and 4 GB before; about a second of work now
    assert f"error: data/train.jsonl:1: the chat template of {tmp_path / 'weights'} took more than 2,000,000 steps" in (
        r.err.replace(str(tmp_path / "data" / "train.jsonl"), "data/train.jsonl")
    )
    assert "fix: give generation_config.prompt_format" in r.err and "Traceback" not in r.err


def test_a_chat_template_touching_python_internals_is_a_clear_error_in_inspect_and_run(job, ftc, tmp_path, tiny_model):
    _weights_with_template(tiny_model, tmp_path / "weights", "{{ messages.__class__.__mro__ }}")
    spec = job(initial_base_model_ckpt_path="weights", output_dir="out")
    r = ftc("data", "inspect", spec, "-n", "1")
    assert r.code == ExitCode.DATA_INVALID and "Traceback" not in r.err
    assert "did what the sandbox forbids: access to attribute '__class__' of 'list' object is unsafe" in r.err
    assert ftc("compile", spec, "-o", tmp_path / "plan.json").code == 0
    r = ftc("run", tmp_path / "plan.json")
    assert r.code == ExitCode.DATA_INVALID and "Traceback" not in r.err
    assert "data/train.jsonl:1: the chat template of" in r.err and "did what the sandbox forbids" in r.err


#: clears the screen, returns to the start of the line, and makes a hidden link: data must not do that to a terminal
HOSTILE_TEXT = "12 + 7 = 19. \x1b[2J\r\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\ "


def _our_codes_removed(text: str) -> str:
    for code in ("\x1b[1;32m", "\x1b[2m", "\x1b[0m"):
        text = text.replace(code, "")
    return text


def test_a_16_mib_line_is_shown_in_4_kib_in_seconds_and_its_control_characters_escaped(job, ftc, tmp_path):
    import time

    from ftc.runtime.training.render import render_prompt_format
    from ftc.spec import PromptFormat
    from ftc.spec.chat_data import MAX_LINE

    per = len(json.dumps(HOSTILE_TEXT)) - 2
    content = HOSTILE_TEXT * ((MAX_LINE - 300) // per)
    line = json.dumps({"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "19"}]})
    assert MAX_LINE - 400 < len(line) <= MAX_LINE  # as long as a line may be
    short = arithmetic_examples(3, seed=1)
    with open(tmp_path / "data" / "big.jsonl", "w") as f:
        f.write(line + "\n" + "".join(json.dumps(e) + "\n" for e in short))
    spec = job(train_path="data/big.jsonl", generation_config={"prompt_format": PROMPT_FORMAT})
    for colour in ("--no-color", "--color"):
        started = time.monotonic()
        r = ftc("data", "inspect", spec, "-n", "2", colour)
        assert r.code == 0, r.err
        assert time.monotonic() - started < 60  # it took 147 s and 6 GB, and printed all 16 MiB
        assert len(r.out) < 16_384
        rendered = len(render_prompt_format(json.loads(line)["messages"], PromptFormat(**PROMPT_FORMAT)).text)
        assert f"--- data/big.jsonl:1 ({rendered:,} characters, not tokenized here)" in r.out
        assert f"... {rendered - 4096:,} more characters" in r.out
        assert "\\x1b[2J\\r\\x1b]8;;http://evil.example\\x1b\\link" in r.out
        assert "\x1b" not in _our_codes_removed(r.out) and "\r" not in r.out
        assert "examples: 3 (0 bad)" in r.out  # the statistics of what was tokenized
        assert "warning: 1 example(s) of more than 1,048,576 characters rendered (data/big.jsonl:1) were not " in r.out
    assert "\x1b[1;32m" in r.out  # with --color: the trained text still in colour


def test_control_characters_of_a_short_example_are_escaped_and_its_lines_kept(job, ftc, tmp_path):
    write_jsonl(
        tmp_path / "data" / "odd.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "first line\n" + HOSTILE_TEXT},
                    {"role": "assistant", "content": "1\r9"},
                ]
            }
        ],
    )
    spec = job(train_path="data/odd.jsonl", generation_config={"prompt_format": PROMPT_FORMAT})
    r = ftc("data", "inspect", spec, "-n", "1", "--color")
    assert r.code == 0, r.err
    assert "<|user|>\nfirst line\n12 + 7 = 19. \\x1b[2J\\r\\x1b]8;;http://evil.example\\x1b\\link" in r.out
    assert "\x1b[1;32m1\\r9</s>\n\x1b[0m" in r.out  # the answer still marked as trained, its \r escaped
    assert "\x1b" not in _our_codes_removed(r.out) and "\r" not in r.out
