"""``ftc reproduce CKPT -o DIR``: audit a checkpoint by re-execution. Its own plan (the plan.json it carries, the
same bytes), its chain verified first, every input materialized by its pin (local files where its record locates
them, S3 versions, GCS generations, DVC commit + md5: never "latest"), run into a fresh folder up to the
checkpoint's step; then every file compared with the original's record. The verdict:

- **bitwise reproduced**: every file identical;
- **numerically reproduced**: the weights differ, each tensor within the stated tolerance (``|a - b| <= atol + rtol
  * max|a|``), per-tensor differences and the eval losses side by side: expected across GPU kernels or versions;
- **not reproduced**: outside the tolerance (exit 16), with the likely causes ranked from the two records.

The rerun's checkpoints name the original as a parent with relation ``reproduction-of`` (so ``ftc lineage verify``
of the rerun re-hashes the original too), and the verdict is written to ``DIR/reproduction.json``.

The plan comes from the checkpoint: outside input, checked exactly as a compiled plan (``ftc.spec.plan.valid_plan``:
its DeepSpeed section an allow-list without monitors, profilers or paths; its logger's log_dir inside the output).
It is obeyed in what it pins, never in where it reports or writes: the rerun writes only into DIR (and ftc's own
cache), feeds no tracker unless the caller names one (``tracker``, set up from the environment alone), and DIR may
not be inside the checkpoint or any input it reads."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.errors import InputChanged, InputUnresolvable, LineageBroken, NotReproduced, UsageError
from ftc.lineage import checkpoint_folder, verify
from ftc.lineage.diff import environment_differences, input_differences, topology_differences
from ftc.lineage.plan import PLAN_FILE, refuse_foreign_endpoints, reproduction_plan
from ftc.lineage.record import REPRODUCTION_FILE, checkpoint_files, read_record
from ftc.runtime.training.progress import log
from ftc.spec.folders import system_folder
from ftc.stores.atomic import write_text_atomic
from ftc.stores.hashing import StatCache, hash_file
from ftc.stores.sources import SOURCES
from ftc.stores.stamps import ReadRecord

__all__ = ["REPORT_FILE", "Reproduction", "check_options", "reproduce"]

REPORT_FILE = REPRODUCTION_FILE
BITWISE, NUMERICAL, NOT_REPRODUCED = "bitwise reproduced", "numerically reproduced", "not reproduced"


@dataclass
class Reproduction:
    """What ``ftc reproduce`` found (also what reproduction.json holds)."""

    verdict: str
    original: str
    rerun: str
    tolerance: dict[str, float]
    files: dict[str, str] = field(default_factory=dict)  # path -> "same" | "differs" | "missing" | "extra"
    tensors: list[dict[str, Any]] = field(default_factory=list)  # the differing tensors, worst first
    evals: list[dict[str, Any]] = field(default_factory=list)  # step, original, rerun
    causes: list[str] = field(default_factory=list)  # likely first
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "original": self.original,
            "rerun": self.rerun,
            "tolerance": self.tolerance,
            "files": self.files,
            "tensors": self.tensors,
            "evals": self.evals,
            "likely_causes": self.causes,
            "measured": {"wall_time_s": round(self.seconds, 3)},
        }

    def text(self) -> str:
        lines = [f"{self.verdict}: {self.rerun} against {self.original}"]
        differing = [p for p, s in self.files.items() if s != "same"]
        lines.append(f"  files: {len(self.files) - len(differing)} of {len(self.files)} identical")
        lines += [f"    {path}: {self.files[path]}" for path in differing]
        for t in self.tensors[:10]:
            outside = "" if t["within"] else "  OUTSIDE the tolerance"
            if t.get("note"):
                lines.append(f"    {t['file']} {t['tensor']}: {t['note']}{outside}")
                continue
            relative = f"{t['max_rel_diff']:.3g}" if t["max_rel_diff"] is not None else "n/a"
            lines.append(
                f"    {t['file']} {t['tensor']}: max |diff| {t['max_abs_diff']:.3g} (max |value| {t['max_abs']:.3g},"
                f" relative {relative}){outside}"
            )
        if len(self.tensors) > 10:
            lines.append(f"    ... {len(self.tensors) - 10} more tensor(s) differ ({REPORT_FILE} lists them all)")
        if self.tensors:
            lines.append(f"  tolerance: |a - b| <= {self.tolerance['atol']:g} + {self.tolerance['rtol']:g} * max|a|")
        for e in self.evals:
            mark = "" if e["original"] == e["rerun"] else "  (differs)"
            lines.append(f"  eval loss at step {e['step']}: {e['original']} vs {e['rerun']}{mark}")
        if self.verdict != BITWISE and self.causes:
            lines.append("  likely causes (from the two records):")
            lines += [f"    {c}" for c in self.causes]
        return "\n".join(lines)


def check_options(output: Path, *, rtol: float, atol: float) -> None:
    """What ``ftc reproduce`` is asked, checked before any checkpoint is read or fetched: finite tolerances, and an
    output that is not a system folder."""
    for name, value in (("rtol", rtol), ("atol", atol)):  # nan would judge nothing within, inf everything
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--{name} {value}: a tolerance is a finite number >= 0\n    fix: e.g. --{name} 0.01")
    why = system_folder(output.expanduser().absolute())
    if why is not None:
        raise UsageError(f"-o {output}: {why}; a rerun writes into a new folder of its own\n    fix: e.g. -o rerun")


def reproduce(
    checkpoint: Path,
    output: Path,
    *,
    rtol: float = 1e-2,
    atol: float = 1e-6,
    tracker: str = "off",
    given: str | None = None,
) -> Reproduction:
    """Rerun the plan of the checkpoint at ``checkpoint`` into ``output`` (a new or empty folder) and compare. Raises
    :class:`NotReproduced` (with the report written) when the weights differ beyond the tolerance. ``tracker``:
    ``off``, or the tracker to feed (configured from the environment; the plan's logger is never used). ``given``:
    the checkpoint as the caller named it (a relative path, a store's URI), which the rerun's records keep as given
    (default: ``checkpoint`` as passed)."""
    from .local import run_plan

    started = time.monotonic()
    check_options(output, rtol=rtol, atol=atol)
    folder = checkpoint_folder(checkpoint).resolve()
    _refuse_output_inside(output, folder, "the checkpoint it reproduces")  # before anything is read or run
    record, count, rehashed, unreached = verify(folder)  # LineageBroken names whatever does not match
    if "export" in record:
        raise UsageError(f"{folder}: an export; reproduce the checkpoint it was made from (its lineage names it)")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UsageError(f"{output}: exists and is not empty; a reproduction runs into a new folder")
    log(f"reproducing {folder.name} (record {record['record_id'][:19]}…): chain verified ({count} record(s))")
    for parent in unreached:
        log(f"  not re-hashed (not found here; its record was checked): {parent}")
    plan = reproduction_plan(folder, record, output, tracker=tracker, given=given or str(checkpoint))
    for role, item in plan.inputs.items():  # the rerun reads them: it writes into none of them
        if SOURCES[item.source].on_disk:
            _refuse_output_inside(output, plan.locate(item.uri), f"its {role} input")
    refuse_foreign_endpoints(plan)  # before anything is fetched
    try:
        run_plan(plan, folder / PLAN_FILE)
    except InputChanged as exc:
        if not exc.gone:
            raise
        raise InputUnresolvable(
            f"{exc}\n    the checkpoint cannot be reproduced without the input its plan pins", "input"
        ) from None
    rerun = output / "checkpoints" / record["checkpoint"]["name"]
    if not (rerun / "lineage.json").is_file():
        raise UsageError(f"{rerun}: the rerun wrote no checkpoint of step {record['results']['step']}")
    found = _compare(folder, record, rerun, rtol=rtol, atol=atol)
    found.seconds = time.monotonic() - started
    write_text_atomic(output / REPORT_FILE, json.dumps(found.to_dict(), indent=2, sort_keys=True) + "\n")
    if found.verdict == NOT_REPRODUCED:
        raise NotReproduced(found.text() + f"\n    the rerun and this report are kept: {output}")
    return found


def _refuse_output_inside(output: Path, folder: Path, what: str) -> None:
    """A rerun written into the checkpoint (or an input) would change what it is compared with: refused."""
    out, inside = output.resolve(), folder.resolve()
    if out == inside or out.is_relative_to(inside):
        raise UsageError(
            f"-o {output}: inside {what} ({inside}); a rerun written there changes the files it is checked against"
            "\n    fix: give a new folder outside it, e.g. -o rerun"
        )


def _compare(original: Path, record: dict[str, Any], rerun: Path, *, rtol: float, atol: float) -> Reproduction:
    theirs = {f["path"]: f["sha256"] for f in record["checkpoint"]["files"]}
    ours = {f.path: f.sha256 for f in checkpoint_files(rerun)}
    files = {
        path: "missing" if path not in ours else "extra" if path not in theirs else "same" if theirs[path] == ours[path]
        else "differs"
        for path in sorted(set(theirs) | set(ours))
    }  # fmt: skip
    rerun_record = read_record(rerun) or {}
    out = Reproduction(BITWISE, str(original), str(rerun), {"rtol": rtol, "atol": atol}, files)
    out.evals = _evals(record, rerun_record)
    if all(state == "same" for state in files.values()):
        return out
    weights = [p for p, s in files.items() if p.endswith(".safetensors") and s == "differs"]
    other = [p for p, s in files.items() if s != "same" and p not in weights and p != "ftc_state.json"]
    read = _still_recorded(original, {path: theirs[path] for path in weights})  # verified before the rerun
    out.tensors = [t for path in weights for t in _tensor_differences(original / path, rerun / path, rtol, atol)]
    if read.changed():
        raise LineageBroken(f"{original}: changed while ftc compared it with the rerun\n    fix: {_RESTORE}")
    out.tensors.sort(key=lambda t: (t["within"], -(t["max_rel_diff"] if t["max_rel_diff"] is not None else 1e300)))
    within = all(t["within"] for t in out.tensors)
    out.verdict = NUMERICAL if within and not other else NOT_REPRODUCED
    out.causes = _causes(record, rerun_record)
    return out


_RESTORE = "restore the checkpoint (`ftc lineage verify` names every difference) and reproduce it again"


def _still_recorded(original: Path, recorded: dict[str, str]) -> ReadRecord:
    """The original's files ``recorded`` (path -> sha256), still the bytes its record names after the rerun trained
    (through the stat cache: unchanged files are not read again), as they were then; else :class:`LineageBroken`."""
    with StatCache() as cache:
        for path, sha in recorded.items():
            try:
                found, _ = hash_file(original / path, cache)
            except OSError as exc:
                found = f"unreadable ({exc})"
            if found != sha:
                raise LineageBroken(
                    f"{original / path}: no longer the bytes its lineage record names (sha256:{sha}; changed while "
                    f"the rerun trained)\n    fix: {_RESTORE}"
                )
    return cache.read


def _evals(original: dict[str, Any], rerun: dict[str, Any]) -> list[dict[str, Any]]:
    a = {e["step"]: e.get("eval_loss") for e in original.get("results", {}).get("evals", [])}
    b = {e["step"]: e.get("eval_loss") for e in rerun.get("results", {}).get("evals", [])}
    return [{"step": s, "original": a.get(s), "rerun": b.get(s)} for s in sorted(set(a) | set(b))]


def _causes(original: dict[str, Any], rerun: dict[str, Any]) -> list[str]:
    """What differs between the two records, likeliest first: inputs (pinned: there should be none), the devices and
    processes that ran it, then the software."""
    causes = [f"input {line}" for line in input_differences(original, rerun)]
    causes += [f"topology {line}" for line in topology_differences(original, rerun)]
    causes += [f"environment {line}" for line in environment_differences(original, rerun)]
    return causes or ["none recorded: same inputs, topology and key package versions (nondeterministic kernels?)"]


def _tensor_differences(a_path: Path, b_path: Path, rtol: float, atol: float) -> list[dict[str, Any]]:
    """Per tensor of two safetensors files (verified by the chain check and just written): the differing ones."""
    import torch
    from safetensors import safe_open

    out = []
    name = a_path.name

    def mismatch(key: str, note: str) -> dict[str, Any]:
        return {"file": name, "tensor": key, "max_abs_diff": None, "max_abs": None, "max_rel_diff": None,
                "within": False, "note": note}  # fmt: skip

    with safe_open(str(a_path), "pt") as a, safe_open(str(b_path), "pt") as b:
        keys_a, keys_b = set(a.keys()), set(b.keys())
        out += [mismatch(key, "in one file only") for key in sorted(keys_a ^ keys_b)]
        for key in sorted(keys_a & keys_b):
            x, y = a.get_tensor(key).double(), b.get_tensor(key).double()
            if x.shape != y.shape:
                out.append(mismatch(key, f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}"))
                continue
            if torch.equal(x, y):
                continue
            diff = float((x - y).abs().max())
            scale = float(x.abs().max())
            out.append(
                {
                    "file": name,
                    "tensor": key,
                    "max_abs_diff": diff,
                    "max_abs": scale,
                    "max_rel_diff": diff / scale if scale > 0 else None,
                    "within": diff <= atol + rtol * scale,
                }
            )
    return out
