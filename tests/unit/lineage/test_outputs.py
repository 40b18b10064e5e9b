"""A command that reads a checkpoint never writes into it: ``check_output_outside`` refuses such an output path (and
one over the file the command reads) before any work, and lets every other path through."""

from __future__ import annotations

import pytest

from ftc.errors import UsageError
from ftc.lineage.outputs import check_output_outside


def test_a_path_beside_the_checkpoint_read_is_allowed(run_folder, tmp_path):
    assert check_output_outside(tmp_path / "report.html", reads=run_folder) == tmp_path / "report.html"
    assert check_output_outside(run_folder / "report.html", reads=run_folder) == run_folder / "report.html"
    assert check_output_outside(tmp_path / "export", folder=True, reads=run_folder / "best") == tmp_path / "export"


@pytest.mark.parametrize(
    "inside", ["checkpoints/step-000004/report.html", "checkpoints/step-000002/x.html", "best/x.html", "checkpoints"]
)
def test_a_path_inside_any_checkpoint_of_the_run_read_is_refused(run_folder, inside):
    with pytest.raises(UsageError, match="-o "):
        check_output_outside(run_folder / inside, reads=run_folder)


def test_a_path_inside_the_one_checkpoint_read_is_refused(run_folder):
    checkpoint = run_folder / "checkpoints" / "step-000002"
    with pytest.raises(UsageError, match="-o "):
        check_output_outside(checkpoint / "out", folder=True, reads=checkpoint)
    # its sibling is another checkpoint, not the one read
    assert check_output_outside(run_folder / "other.html", reads=checkpoint) == run_folder / "other.html"


def test_the_file_the_command_reads_is_never_the_output(tmp_path):
    data = tmp_path / "test.jsonl"
    data.write_text("{}\n")
    before = data.read_bytes()
    with pytest.raises(UsageError, match="-o "):
        check_output_outside(data, also=data)
    assert data.read_bytes() == before
