"""A safetensors header is read without trusting it: every malformed file is named with its reason."""

from __future__ import annotations

import json
import struct

import pytest

from ftc.stores.safetensors_header import BadSafetensors, read_safetensors_header


def _file(path, header: dict, data: bytes, length: int | None = None):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


GOOD = {
    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]},
}


def test_a_well_formed_file_gives_its_tensors(tmp_path):
    header = read_safetensors_header(
        _file(tmp_path / "w.safetensors", {**GOOD, "__metadata__": {"format": "pt"}}, b"\0" * 12)
    )
    assert {n: (t.dtype, t.shape) for n, t in header.tensors.items()} == {"a": ("F32", (2,)), "b": ("BF16", (1, 2))}
    assert header.metadata == {"format": "pt"}


def test_the_tiny_models_weights_read_as_saved(tiny_model):
    header = read_safetensors_header(tiny_model / "model.safetensors")
    assert header.tensors["model.embed_tokens.weight"].shape == (512, 64)


@pytest.mark.parametrize(
    "header, data, length, message",
    [
        (GOOD, b"\0" * 12, 2**62, "its header claims 4,611,686,018,427,387,904 bytes"),
        (GOOD, b"\0" * 6, None, "the tensors end at byte 12 of 6 bytes of data"),  # truncated
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            None,
            "overlaps the tensor before it",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 12,
            None,
            "the tensors end at byte 8 of 12",
        ),
        ({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "unknown dtype 'F33'"),
        (
            {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}},
            b"\0" * 8,
            None,
            "F32 [3] needs 12 bytes, its range holds 8",
        ),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, None, "is not a list of sizes"),
        ({"a": [1, 2]}, b"", None, "not an entry of dtype, shape and data_offsets"),
    ],
    ids=[
        "huge header length",
        "truncated",
        "overlapping",
        "a gap at the end",
        "unknown dtype",
        "shape vs range",
        "negative size",
        "not an entry",
    ],
)
def test_a_malformed_file_is_named_with_its_reason(tmp_path, header, data, length, message):
    path = _file(tmp_path / "w.safetensors", header, data, length)
    with pytest.raises(BadSafetensors, match="^w.safetensors: ") as error:
        read_safetensors_header(path)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "0 bytes, too short"),
        (struct.pack("<Q", 4) + b"\xff\xfe{}", "its header is not JSON text"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
    ids=["empty", "not UTF-8", "a list"],
)
def test_a_file_that_is_no_safetensors_at_all_is_named(tmp_path, content, message):
    (tmp_path / "w.safetensors").write_bytes(content)
    with pytest.raises(BadSafetensors, match=message):
        read_safetensors_header(tmp_path / "w.safetensors")
