"""Where a command that reads a checkpoint may write: never into that checkpoint, nor over what it reads."""

from __future__ import annotations

from pathlib import Path

from ftc.stores.atomic import check_output_path

from . import checkpoint_folder

__all__ = ["check_output_outside"]


def check_output_outside(
    output: Path, *, folder: bool = False, reads: Path | None = None, also: Path | None = None
) -> Path:
    """Refuse the output path ``output`` before any work (a :class:`~ftc.errors.UsageError` naming ``-o``): a link,
    a device, a FIFO, a socket, a folder where a file goes (or, with ``folder``, a file where a folder goes), or a
    path inside the checkpoint ``reads`` (a run's output folder: any of its checkpoints) or the file ``also`` that
    the command reads. Returns ``output``."""
    check_output_path(output, folder=folder, not_inside=[also] if also is not None else [])
    if reads is not None and reads.is_dir():
        found = checkpoint_folder(reads)
        check_output_path(
            output, folder=folder, not_inside=[found] if found == reads else [found, reads / "checkpoints"]
        )
    return output
