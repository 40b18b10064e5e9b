"""What people read of lineage records cannot be hijacked, and every reader of a record is bounded.

Records here are built directly (sealed with ``seal``, schema-valid, no training): a chain deeper than ftc reads, a
record nested or numbered to exhaust a reader, and names that carry terminal escapes, Markdown, YAML and Mermaid
syntax. Each case runs the real ``ftc`` command and asserts its message and exit code.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from ftc.errors import ExitCode, LineageBroken
from ftc.lineage.record import MAX_CHAIN_DEPTH, checkpoint_parent, record_id_of, record_ids, seal

from support.records import DIGEST, deep_chain, record_for, write_checkpoint

TOO_DEEP = f"its chain embeds more than {MAX_CHAIN_DEPTH} records"
#: what a name from a record may try on a terminal: clear the screen, a hidden link, a carriage return that
#: overwrites the line with "verified", a bidirectional override
HOSTILE = "evil\x1b[2J\x1b]8;;http://evil.example\x1b\\link\x1b]8;;\x1b\\\rverified \u202egnp.exe"


def _raw_controls(text: str) -> list[str]:
    return sorted({c for c in text if c in "\x1b\r\x07\u202e" or (ord(c) < 32 and c != "\n")})


@pytest.fixture(scope="module")
def chain150(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deep") / "ckpt"
    deep_chain(folder, 150)
    return folder


# ---- a chain deeper than ftc reads -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["lineage", "show"],
        ["lineage", "show", "--format", "json"],
        ["lineage", "show", "--format", "mermaid"],
        ["lineage", "show", "--format", "dot"],
        ["lineage", "verify"],
        ["lineage", "export", "--format", "model-card"],
        ["lineage", "export", "--format", "cyclonedx"],
        ["lineage", "export", "--format", "openlineage"],
        ["lineage", "diff", "SELF"],
        ["report", "-o", "OUT"],
        ["generate", "--prompt", "hi"],
        ["reproduce", "-o", "OUT"],
    ],
    ids=lambda a: " ".join(a[:4]),
)
def test_a_chain_150_records_deep_is_refused_by_every_reader(args, chain150, ftc, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")).replace("SELF", str(chain150)) for a in args]
    r = ftc(*args[:2], chain150, *args[2:]) if args[0] == "lineage" else ftc(args[0], chain150, *args[1:])
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert TOO_DEEP in r.err and "fix: ftc never extends a chain past that" in r.err, r.err
    assert "Traceback" not in r.err and "RecursionError" not in r.err
    assert not (tmp_path / "out").exists()


def test_a_chain_at_the_limit_is_read_shown_and_verified(ftc, tmp_path):
    deep_chain(tmp_path / "ckpt", MAX_CHAIN_DEPTH - 1)  # the checkpoint and 63 ancestors: 64 records
    r = ftc("lineage", "verify", tmp_path / "ckpt")
    assert r.code == 0, r.err
    assert f"{MAX_CHAIN_DEPTH} lineage record(s) in the chain recomputed" in r.out
    shown = ftc("lineage", "show", tmp_path / "ckpt")
    assert shown.code == 0 and len(shown.out.splitlines()) == MAX_CHAIN_DEPTH


def test_a_checkpoint_whose_chain_is_full_cannot_become_a_parent(tmp_path):
    """An export or a reproduction of a 64-record chain would write a record no reader accepts: refused first."""
    record = deep_chain(tmp_path / "ckpt", MAX_CHAIN_DEPTH - 1)
    with pytest.raises(LineageBroken, match=f"already holds {MAX_CHAIN_DEPTH} records, the most ftc reads"):
        checkpoint_parent(tmp_path / "ckpt", record, "exported", tmp_path / "export", "ckpt")
    shorter = deep_chain(tmp_path / "ok", MAX_CHAIN_DEPTH - 2)
    assert checkpoint_parent(tmp_path / "ok", shorter, "exported", tmp_path / "export", "ok")["lineage"] is shorter


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply to parse"),
        (None, "JSON nested more than 272 levels deep"),
        (None, "an integer beyond 64 bits"),
    ],
    ids=["past the parser", "past the walkers", "a 400-digit step"],
)
def test_a_record_built_to_exhaust_a_reader_is_refused_when_read(text, message, ftc, tmp_path):
    folder = tmp_path / "ckpt"
    record = write_checkpoint(folder)
    if text is None and "nested" in message:  # parseable, but deeper than any reader should walk
        nested: list = []
        for _ in range(400):
            nested = [nested]
        record["results"]["evals"][0]["extra"] = nested  # evals items allow extra keys
        text = json.dumps(seal(record))
    elif text is None:
        text = json.dumps(seal(record)).replace('"step": 4,', '"step": 1' + "0" * 400 + ",", 1)
    (folder / "lineage.json").write_text(text)
    for verb in ("show", "verify", "diff"):
        r = ftc("lineage", verb, folder, *([folder] if verb == "diff" else []))
        assert r.code == ExitCode.LINEAGE_BROKEN and message in r.err, r.err
        assert "Traceback" not in r.err


def test_folders_naming_each_other_as_parents_are_followed_only_so_far(ftc, tmp_path):
    """New: 1,100 folders, each a checkpoint with a shallow record whose parent is the next folder: verify walked
    them recursively into a RecursionError; now it stops past the chain limit and says so."""
    count = 1100
    for i in reversed(range(count)):
        folder = tmp_path / f"f{i}"
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        shallow = record_for(folder)
        parent = {"role": "adapter", "relation": "adapter-continued", "digest": DIGEST,
                  "source": {"source": "local", "kind": "dir", "location": f"../f{i + 1}"},
                  "record_id": shallow["record_id"], "lineage": shallow}  # fmt: skip
        record = shallow if i == count - 1 else record_for(folder, parents=[parent])
        (folder / "lineage.json").write_text(json.dumps(record))
    started = time.monotonic()
    r = ftc("lineage", "verify", tmp_path / "f0")
    assert r.code == ExitCode.LINEAGE_BROKEN, r.err
    assert f"f{MAX_CHAIN_DEPTH}: the chain goes on past {MAX_CHAIN_DEPTH} checkpoints on disk" in r.err
    assert "Traceback" not in r.err and time.monotonic() - started < 60


def test_parents_that_name_each_other_in_a_cycle_end(ftc, tmp_path):
    """New: a's parent is b and b's parent is a (by location and by record_id): each is verified once."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
    ra, rb = record_for(a), record_for(b)
    for folder, other, record in ((a, "b", rb), (b, "a", ra)):
        entry = {"role": "adapter", "relation": "adapter-continued", "digest": DIGEST,
                 "source": {"source": "local", "kind": "dir", "location": f"../{other}"},
                 "record_id": record["record_id"], "lineage": record}  # fmt: skip
        (folder / "lineage.json").write_text(json.dumps(record_for(folder, parents=[entry])))
    r = ftc("lineage", "verify", a)
    assert r.code == 0 and "2 lineage record(s) in the chain recomputed" in r.out, r.err
    assert ftc("lineage", "show", a).code == 0


def test_record_ids_of_a_whole_chain_are_record_id_of_each(tmp_path):
    """The one-pass ids equal the documented digest of every record, whatever the names hold."""
    (tmp_path / "f").write_text("x")
    parent = None
    for i in range(6):
        parent = record_for(tmp_path, parent=parent, model_id=f'"}}]\\{HOSTILE}-{i}', checkpoint={"name": f"s{i}"})
    parent["parents"].append(dict(parent["parents"][0]))  # the same parent twice
    parent["measured"] = {"wall_time_s": 1.5}  # outside the seal
    ids, stack, seen = record_ids(parent), [parent], 0
    while stack:
        record = stack.pop()
        assert ids[id(record)] == record_id_of(record)
        stack += [p["lineage"] for p in record["parents"] if p.get("lineage")]
        seen += 1
    assert seen == 1 + 5 + 5  # the top, and its chain of five twice


# ---- terminals -------------------------------------------------------------------------------------------------


def test_lineage_show_and_verify_print_names_with_their_control_characters_escaped(ftc, tmp_path):
    write_checkpoint(
        tmp_path / "ckpt",
        model_id=HOSTILE,
        checkpoint={"name": "step-1\rverified"},
        datasets=[{"role": "train", "source": {"source": "local", "kind": "file", "location": f"../{HOSTILE}"},
                   "sha256": DIGEST, "examples": 4, "examples_used": 4, "examples_skipped": 0}],
    )  # fmt: skip
    for args in (["show"], ["show", "--paths"], ["verify"]):
        r = ftc("lineage", args[0], tmp_path / "ckpt", *args[1:])
        assert r.code == 0, r.err
        assert _raw_controls(r.out) == [], r.out
    shown = ftc("lineage", "show", tmp_path / "ckpt").out
    assert "evil\\x1b[2J\\x1b]8;;http://evil.example\\x1b\\link" in shown and "\\u202egnp.exe" in shown
    assert "checkpoint step-1\\rverified (adapter of evil" in shown
    verified = ftc("lineage", "verify", tmp_path / "ckpt").out
    assert "files of step-1\\rverified re-hashed" in verified


def test_an_error_quoting_a_file_name_from_a_record_is_printed_escaped(ftc, tmp_path):
    record = write_checkpoint(tmp_path / "ckpt")
    record["checkpoint"]["files"].append({"path": "a\x1b[2Jb\rverified", "size": 1, "sha256": "0" * 64})
    (tmp_path / "ckpt" / "lineage.json").write_text(json.dumps(seal(record)))  # names a file that is not there
    r = ftc("lineage", "verify", tmp_path / "ckpt")
    assert r.code == ExitCode.LINEAGE_BROKEN
    assert "a\\x1b[2Jb\\rverified: missing" in r.err and _raw_controls(r.err) == [], r.err


def test_lineage_diff_prints_values_escaped_and_sees_a_different_model_id(ftc, tmp_path):
    write_checkpoint(tmp_path / "a", model_id="org/model")
    write_checkpoint(tmp_path / "b", model_id=HOSTILE)
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0, r.err
    assert "the histories are the same" not in r.out
    assert 'checkpoint.model_id: "org/model" -> "evil' in r.out and _raw_controls(r.out) == [], r.out
    assert "settings: 1 difference(s)" in r.out


@pytest.mark.parametrize(
    "change, line",
    [
        (dict(checkpoint={"kind": "full"}), 'checkpoint.kind: "adapter" -> "full"'),
        (dict(plan={"mode": "full"}), 'plan.mode: "lora-new" -> "full"'),
        (
            dict(
                parents=[
                    {
                        "role": "base_model",
                        "relation": "adapter",
                        "source": {"source": "hub", "uri": "org/b"},
                        "digest": None,
                    }
                ]
            ),  # fmt: skip
            "base_model: (no digest) (org/a) -> (no digest) (org/b)",
        ),
    ],
    ids=["kind", "mode", "unpinned base by name"],
)
def test_lineage_diff_sees_what_a_record_states_beyond_its_spec_digest(change, line, ftc, tmp_path):
    hub = [{"role": "base_model", "relation": "adapter", "source": {"source": "hub", "uri": "org/a"}, "digest": None}]
    write_checkpoint(tmp_path / "a", parents=hub)
    write_checkpoint(tmp_path / "b", **{"parents": hub, **change})
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0 and line in r.out, r.out
    as_json = json.loads(ftc("lineage", "diff", tmp_path / "a", tmp_path / "b", "--format", "json").out)
    assert not as_json["identical"]


def test_lineage_diff_of_the_same_record_is_the_same(ftc, tmp_path):
    write_checkpoint(tmp_path / "a")
    write_checkpoint(tmp_path / "b")
    r = ftc("lineage", "diff", tmp_path / "a", tmp_path / "b")
    assert r.code == 0 and "the histories are the same" in r.out, r.out


# ---- Mermaid and dot -------------------------------------------------------------------------------------------

GRAPH_HOSTILE = (
    'x"] ; click n0 "javascript:alert(1)" ;\n%%{init: {"securityLevel": "loose"}}%%\n<script>alert(1)</script>'
    " #quot; `md` |edge| \\l" + HOSTILE
)


def test_mermaid_labels_cannot_close_the_label_add_a_directive_or_markup(ftc, tmp_path):
    write_checkpoint(tmp_path / "ckpt", model_id=GRAPH_HOSTILE, checkpoint={"name": "a]\n b"})
    r = ftc("lineage", "show", tmp_path / "ckpt", "--format", "mermaid")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "flowchart BT" and len(lines) == 2  # one node, nothing added
    assert re.fullmatch(r'  n0\["[^"<>%`#\n]*(?:#\d+;[^"<>%`#\n]*)*"\]', lines[1].replace("<br/>", "")), lines[1]
    assert "#34;" in lines[1] and "#37;#37;#123;init" in lines[1] and "#60;script#62;" in lines[1]
    assert _raw_controls(r.out) == []


def test_dot_labels_cannot_close_the_label(ftc, tmp_path):
    write_checkpoint(tmp_path / "ckpt", model_id=GRAPH_HOSTILE)
    r = ftc("lineage", "show", tmp_path / "ckpt", "--format", "dot")
    assert r.code == 0, r.err
    node = [line for line in r.out.splitlines() if line.startswith("  n0 ")]
    assert len(node) == 1 and re.fullmatch(r'  n0 \[label="(?:[^"\\]|\\.)*"\];', node[0]), node
    assert '\\"] ; click' in node[0] and "\\\\l" in node[0] and _raw_controls(r.out) == []


# ---- the model card (`ftc lineage export --format model-card`) -------------------------------------------------


@pytest.mark.parametrize(
    "model_id",
    [
        "org/model\nlicense: mit\npipeline_tag: text-classification",
        "!!python/object/apply:os.system ['touch /tmp/ftc-pwned']",
        "org/model\n---\n<script>alert(1)</script>",
        "'quoted' \"double\" : {flow} [seq] & *alias #comment",
        HOSTILE,
    ],
    ids=["new keys", "python tag", "end of front matter", "yaml syntax", "terminal escapes"],
)
def test_model_card_front_matter_is_yaml_with_exactly_its_keys(model_id, ftc, tmp_path):
    write_checkpoint(tmp_path / "ckpt", model_id=model_id, checkpoint={"name": "step-1"})
    r = ftc("lineage", "export", tmp_path / "ckpt", "--format", "model-card")
    assert r.code == 0, r.err
    assert r.out.startswith("---\n")
    front, body = r.out[4:].split("\n---\n", 1)
    assert yaml.safe_load(front) == {
        "base_model": model_id,
        "base_model_relation": "adapter",
        "library_name": "peft",
        "tags": ["ftc"],
    }
    assert "<script>" not in body and "\nlicense:" not in body and _raw_controls(body) == []
    assert body.splitlines()[1].startswith("# ") and body.count("\n# ") == 1  # one heading: no line was added


def test_model_card_body_escapes_markdown_from_the_record(ftc, tmp_path):
    location = "../data/[click](http://evil.example) <img src=x onerror=alert(1)> | col |"
    write_checkpoint(
        tmp_path / "ckpt",
        datasets=[{"role": "train", "source": {"source": "local", "kind": "file", "location": location},
                   "sha256": DIGEST, "examples": 4, "examples_used": 4, "examples_skipped": 0}],
    )  # fmt: skip
    card = ftc("lineage", "export", tmp_path / "ckpt", "--format", "model-card").out
    assert "<img" not in card and "](http" not in card and "&lt;img" in card
    assert "\\[click\\]\\(http://evil\\.example\\)" in card and "\\| col \\|" in card


def test_parent_locations_naming_another_home_or_holding_nul_are_not_found_not_a_crash(ftc, tmp_path):
    """New: a record's parent at ``~nosuchuser/x`` made verify and report crash (RuntimeError: no such home);
    a record never makes ftc look in another user's home."""
    parents = [
        {"role": "adapter", "relation": "adapter-continued", "digest": DIGEST,
         "source": {"source": "local", "kind": "dir", "location": "../a\x00b"}},
        {"role": "base_model", "relation": "adapter", "digest": "sha256:" + "1" * 64,
         "source": {"source": "local", "kind": "dir", "location": "~nosuchuser/x"}},
    ]  # fmt: skip
    write_checkpoint(tmp_path / "ckpt", parents=parents)
    r = ftc("lineage", "verify", tmp_path / "ckpt")
    assert r.code == 0, r.err
    assert (
        f"not re-hashed (not found here; its record was checked): base_model of ckpt: {tmp_path}/ckpt/~nosuchuser/x"
        in r.out
    )
    assert f"adapter of ckpt: {tmp_path}/a\\x00b" in r.out
    shown = ftc("lineage", "show", tmp_path / "ckpt", "--paths")
    assert shown.code == 0 and f"at {tmp_path}/ckpt/~nosuchuser/x" in shown.out, shown.err
    assert ftc("report", tmp_path / "ckpt", "-o", tmp_path / "page.html").code == 0


def test_lineage_diff_of_a_checkpoint_and_an_export_names_the_export(ftc, tmp_path):
    """New: an export's record has no plan section: diff stopped with a KeyError."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    record = {k: v for k, v in record_for(folder).items() if k not in ("datasets", "plan", "execution", "results")}
    record["export"] = {"merged": True, "dtype": "float32", "chat_template": "prompt_format", "stop_strings": ["</s>"],
                        "eos_token_id": [2]}  # fmt: skip
    (folder / "lineage.json").write_text(json.dumps(seal({k: v for k, v in record.items() if k != "record_id"})))
    write_checkpoint(tmp_path / "ckpt")
    r = ftc("lineage", "diff", tmp_path / "ckpt", folder)
    assert r.code == 0, r.err
    assert 'plan.mode: "lora-new" -> (absent)' in r.out and 'export: (absent) -> {"chat_template"' in r.out
