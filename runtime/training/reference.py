"""The reference model's log-probabilities of every preference pair's answers, an input of a preference run like its
data: computed once, before the first step, from the weights the run loaded (the reference is the model as training
starts), stored in ftc's cache as safetensors named by their sha256, and pinned by that digest in every
checkpoint's lineage and training state. A later run with the same reference weights, data, tokenizer, rendering,
precision and batching reads them from the cache (verified against their name); ``--resume`` and ``ftc
reproduce`` check that the numbers they use are the ones the run started with.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ftc.errors import InputChanged

from .cache_files import CacheEntry, read_cache_file, store_cache_file
from .distributed import Dist
from .preference import Pairs, answer_logps, collate_pairs
from .progress import log

if TYPE_CHECKING:
    from .loss import TokenLoss

__all__ = ["Reference", "check_reference", "reference_cache", "reference_logps"]

#: bump when what is stored, or how it is computed, changes (a choice a run makes, such as the chunked output layer
#: of recipes/dpo.py, goes in the identity instead: the numbers of the other choice keep their key)
_FORMAT = 1


@dataclass(frozen=True)
class Reference:
    """The reference log-probabilities of one data input's pairs: ``values`` (pairs, 2), chosen then rejected, in
    the pairs' order; ``digest``: ``sha256:`` of their safetensors bytes (as stored, or as they would be)."""

    values: np.ndarray
    digest: str
    cached: bool

    def pinned(self) -> dict[str, Any]:
        """As a checkpoint's lineage and state record them."""
        return {"digest": self.digest, "pairs": int(len(self.values))}


def reference_cache(token_caches: tuple[Path | None, Path | None], identity: dict[str, Any]) -> Path | None:
    """Where the reference log-probabilities of a data input are cached: keyed by its two sides' token caches
    (the data, the tokenizer, the rendering) and the reference's ``identity`` (its weights' digests, precision,
    attention, batching, the output layer chunked or not: what the numbers depend on, to their last bits). None when
    either side is not cached (a tokenizer that is not pinned), or a weights input has no digest."""
    if None in token_caches or any(v is None for v in identity.get("weights", {}).values()):
        return None
    blob = json.dumps([_FORMAT, [p.stem for p in token_caches], identity], sort_keys=True).encode()
    chosen = token_caches[0]
    return chosen.parent.parent / "reference-logps" / f"{hashlib.sha256(blob).hexdigest()}.safetensors"


def _tensors(values: np.ndarray, lines: list[int]) -> dict[str, np.ndarray]:
    return {"logps": np.ascontiguousarray(values, dtype=np.float64), "lines": np.asarray(lines, dtype=np.int64)}


def _digest(values: np.ndarray, lines: list[int]) -> str:
    from safetensors.numpy import save

    return "sha256:" + hashlib.sha256(save(_tensors(values, lines), metadata={"format": str(_FORMAT)})).hexdigest()


def _read(entry: CacheEntry, lines: list[int]) -> np.ndarray:
    """The numbers of a cache file: ValueError when they are not these pairs' (another data selection), and the
    file is made again."""
    values, stored_lines = entry.tensors["logps"], entry.tensors["lines"]
    if values.shape != (len(lines), 2) or stored_lines.tolist() != list(lines) or not np.isfinite(values).all():
        raise ValueError("not these pairs' numbers")
    return values


def reference_logps(
    engine: Any, pairs: Pairs, *, token_loss: TokenLoss, cache_file: Path | None, pad_id: int, batch_size: int,
    dist: Dist,
) -> Reference:  # fmt: skip
    """The reference log-probabilities of ``pairs``: read from ``cache_file`` when every rank finds them there (its
    bytes verified against its name; each machine has its own cache), else computed with ``engine`` as it is now
    (every rank its share, ``batch_size`` pairs per forward, gathered on every rank; through the output layer as
    ``token_loss`` goes) and stored there by rank 0."""
    import torch

    what = "the reference log-probabilities"
    read = functools.partial(_read, lines=pairs.lines)
    values = read_cache_file(cache_file, read, what) if cache_file is not None else None
    (hits,) = dist.sum(float(values is not None))  # every rank joins the computation unless every rank has them
    cached = hits == dist.world
    if not cached:
        n = len(pairs)
        values = np.zeros((n, 2))
        was_training = engine.training
        engine.eval()
        with torch.no_grad():
            for start in range(0, n, batch_size * dist.world):
                chunk = list(range(start, min(n, start + batch_size * dist.world)))
                mine = chunk[dist.rank :: dist.world] or chunk[:1]  # every rank joins every forward (ZeRO-3)
                logps, _ = answer_logps(engine, collate_pairs(pairs, mine, pad_id=pad_id), dist.device, token_loss)
                if chunk[dist.rank :: dist.world]:
                    values[mine] = logps.double().cpu().numpy().reshape(2, -1).T
        engine.train(was_training)
        if dist.world > 1:  # each pair is filled in by one rank, zeros elsewhere: a sum gathers them
            values = np.asarray(dist.sum(*values.ravel())).reshape(n, 2)
        if cache_file is not None and dist.main:
            _store(cache_file, values, pairs.lines)
        dist.barrier()
    return Reference(values, _digest(values, pairs.lines), cached)


def _store(cache_file: Path, values: np.ndarray, lines: list[int]) -> None:
    """Store the numbers in the cache; a cache that cannot be written costs the next run their computation, not
    this run its training."""
    try:
        store_cache_file(cache_file, _tensors(values, lines), {"format": str(_FORMAT)})
    except OSError as exc:
        log(f"warning: the reference log-probabilities could not be cached at {cache_file.parent} ({exc}); going on")


def check_reference(found: dict[str, Reference], pinned: dict[str, Any] | None, where: str) -> None:
    """``found`` (role -> the reference used now) must be the numbers ``pinned`` (role -> ``Reference.pinned()``,
    as a checkpoint recorded them; None: nothing pinned yet)."""
    if not pinned:
        return
    for role, ref in found.items():
        want = pinned.get(role, {}).get("digest")
        if want is not None and want != ref.digest:
            raise InputChanged(
                f"{where}: the reference log-probabilities of the {role} pairs are {ref.digest}, not {want}, the "
                "ones the run started with (the reference weights, the data, the precision, the batching or the "
                "ftc version that computes them differ)\n    fix: resume with the ftc version, machine and settings "
                "the run started with, or start a new run"
            )
