"""The conversations ``ftc generate --messages`` answers: each line's turns, its trailing assistant turn removed (the
answer takes its place), named by file and line."""

from __future__ import annotations

import json

import pytest

from ftc.errors import DataInvalid
from ftc.serving.generate import conversations_to_answer


def _write(path, *conversations) -> None:
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in conversations))


def test_the_last_assistant_turn_is_removed_and_earlier_turns_are_kept(tmp_path):
    path = tmp_path / "chats.jsonl"
    system = {"role": "system", "content": "Be brief."}
    user = {"role": "user", "content": "1+1"}
    answer = {"role": "assistant", "content": "2"}
    again = {"role": "user", "content": "and 2+2?"}
    _write(path, [system, user, answer], [user], [user, answer, again, {"role": "assistant", "content": "4"}])
    assert conversations_to_answer(path) == [
        (f"{path}:1", [system, user]),
        (f"{path}:2", [user]),
        (f"{path}:3", [user, answer, again]),
    ]


def test_a_bad_line_is_named_by_its_number(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\nnot json\n")
    with pytest.raises(DataInvalid, match=rf"{path.name}:2: "):
        conversations_to_answer(path)
