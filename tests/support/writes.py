"""Another process writing a file while ftc reads it, at a chosen moment: right after one of ftc's functions
returns. What ftc must then notice (verified, then read) is tested at that moment instead of by chance."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any


def written_after(monkeypatch: Any, module: Any, name: str, path: Path, data: bytes = b"\n") -> Any:
    """Append ``data`` to ``path`` each time ``module.name`` returns (a generator: once it is exhausted); the
    function as it was (to put back with ``monkeypatch.setattr``)."""
    original = getattr(module, name)

    def append() -> None:
        with open(path, "ab") as f:
            f.write(data)

    if inspect.isgeneratorfunction(original):

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            yield from original(*args, **kwargs)
            append()

    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            append()
            return result

    monkeypatch.setattr(module, name, wrapped)
    return original
