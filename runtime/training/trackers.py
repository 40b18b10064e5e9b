"""Experiment trackers (the spec's ``logger``): MLflow, Weights & Biases, TensorBoard, fed by process 0.

Each gets the normalized spec as parameters, every train step and evaluation as metrics, and what ties its run to
ftc's proof as tags: the plan_id, the spec digest, each input's digest, the image, and each checkpoint's record_id
(its lineage.json as an artifact). ``check_tracker`` runs in the launcher, before any training process starts: an
unreachable tracker stops the run there (exit 10), or with ``if_unreachable: warn`` the run trains without it. A
tracker that fails in mid-run is dropped with one warning: training and metrics.jsonl go on. Credentials are the
trackers' own environment variables; nothing here writes one anywhere.

Where the run is in the tracker is kept in the output folder (``tracker.json``) from its start, so ``--resume``
continues that tracker run instead of starting another: MLflow reopens the run (the steps after the checkpoint are
logged again, next to the values the interrupted run logged for them), W&B resumes the run id (offline: a second
offline folder with the same id, which ``wandb sync`` joins), TensorBoard purges the events after the checkpoint's
step.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import time
from pathlib import Path
from typing import Any

from ftc.errors import InputUnresolvable, UsageError
from ftc.spec import Logger
from ftc.spec.plan import Plan
from ftc.spec.text import redact
from ftc.stores.atomic import write_text_atomic

from .progress import EVAL_SCALARS, log
from .tracker_file import TRACKER_FILE, TRACKER_FILE_LIMIT, interrupted_run

__all__ = [
    "TRACKER_ENV",
    "TRACKER_FILE",
    "TRACKER_FILE_LIMIT",
    "Tracker",
    "check_tracker",
    "interrupted_run",
    "open_tracker",
    "redact_library_logs",
    "tracker_metrics",
]

#: the environment each tracker's client reads (its address and credentials): what a container run passes on
TRACKER_ENV = {
    "mlflow": ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
               "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_SERVER_CERT_PATH"),
    "wandb": ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT"),
    "tensorboard": (),
}  # fmt: skip
_EXTRA = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}
_TRAIN_KEYS = {"loss": "train/loss", "lr": "train/lr", "tokens_per_s": "train/tokens_per_s"}
_EVAL_KEYS = {
    "eval_loss": "eval/loss",
    "exact_match": "eval/exact_match",
    **{key: f"eval/{key[5:]}" for key in EVAL_SCALARS},  # eval/accuracy, eval/f1_macro, eval/reward_accuracy, ...
}


class _Redacting(logging.Filter):
    """A library's log line reaches the user through the one redaction: a URL's user-info never shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if redact(text) != text:
            record.msg, record.args = redact(text), ()
        return True


def redact_library_logs(*names: str) -> None:
    """Pass every line the named libraries log (through their loggers and their own handlers) through redact."""
    for name in names:
        logger = logging.getLogger(name)
        for target in (logger, *logger.handlers):
            if not any(isinstance(f, _Redacting) for f in target.filters):
                target.addFilter(_Redacting())


def _flat(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flat(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.dumps(value) if not isinstance(value, str) else value}


def _tags(plan: Plan) -> dict[str, str]:
    tags = {
        "ftc.plan_id": plan.plan_id,
        "ftc.spec_digest": plan.spec_digest,
        "ftc.mode": plan.mode,
        "ftc.model_id": plan.architecture.model_id,
        "ftc.image": plan.image.ref if plan.image is not None else "none (local Python environment)",
    }
    for role, item in sorted(plan.inputs.items()):
        tags[f"ftc.input.{role}"] = item.digest or f"{item.uri} (unpinned)"
    return tags


def tracker_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record's numbers as trackers name them (``train/loss``, ``eval/loss``, ``eval/f1_macro``...)."""
    keys = _TRAIN_KEYS if record.get("type") == "train" else _EVAL_KEYS
    return {name: float(record[key]) for key, name in keys.items() if isinstance(record.get(key), (int, float))}


class NoExperiment(Exception):
    """MLflow has no experiment of that name, and the spec says not to make one."""


class _MLflow:
    def __init__(self, config: dict[str, Any], out: Path):
        uri = config.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UsageError("logger mlflow: no tracking_uri in the spec and no MLFLOW_TRACKING_URI in the environment")
        # a server that does not answer costs seconds, not MLflow's default minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow import MlflowClient

        # MLflow prints "View run at <uri>" itself (to stdout, unredacted): ftc says where the run is, redacted
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        redact_library_logs("mlflow", "urllib3.connectionpool")
        self.client, self.run_id = MlflowClient(tracking_uri=uri), None
        self.uri = redact(uri)  # what is shown and kept: without a password in the URI
        self.queued: list[Any] = []
        self.experiment = config.get("experiment_name", "ftc")
        self.create = config.get("create_experiment_if_not_exists", True)
        self.run_name = config.get("run_name", out.name)
        self.where = f"MLflow at {self.uri}"

    def reachable(self) -> None:
        asked = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"})
        try:  # one question, answered within 5 s, or the server is not there
            self.client.search_experiments(max_results=1)
            absent = not self.create and self.client.get_experiment_by_name(self.experiment) is None
        finally:
            for key, value in asked.items():
                if value is None:
                    del os.environ[key]
                else:
                    os.environ[key] = value
        if absent:
            raise NoExperiment(self.experiment)

    def start(self, params: dict[str, str], tags: dict[str, str], resume: tuple[str, int] | None) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        previous = None
        if resume is not None and resume[0]:
            try:
                previous = self.client.get_run(resume[0])
            except MlflowException:
                pass
            if previous is None or previous.info.lifecycle_stage != "active":  # deleted since: a new run
                previous = None
                log(f"MLflow has no run {resume[0]} any more (the interrupted run's); starting a new one")
        if previous is not None:
            self.run_id, experiment = previous.info.run_id, previous.info.experiment_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None and not self.create:  # deleted since check_tracker asked
                raise NoExperiment(self.experiment)
            experiment = found.experiment_id if found else self.client.create_experiment(self.experiment)
            self.run_id = self.client.create_run(experiment, tags=tags, run_name=self.run_name).info.run_id
            items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])
        if resume is not None:
            self.client.set_tag(self.run_id, "ftc.resumed_at_step", str(resume[1]))
        self.link = {"provider": "mlflow", "run_id": self.run_id,
                     "url": f"{self.uri.rstrip('/')}/#/experiments/{experiment}/runs/{self.run_id}"}  # fmt: skip

    def log(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        stamp = int(record.get("time", time.time()) * 1000)
        metrics = [Metric(k, v, stamp, record["step"]) for k, v in tracker_metrics(record).items()]
        if metrics:  # queued: a step does not wait for the server
            self.queued.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))

    def checkpoint(self, folder: Path, record: dict[str, Any]) -> None:
        self.client.set_tag(self.run_id, f"ftc.record_id.{folder.name}", record["record_id"])
        self.client.set_tag(self.run_id, "ftc.record_id", record["record_id"])
        self.client.log_artifact(self.run_id, str(folder / "lineage.json"), artifact_path=f"lineage/{folder.name}")

    def finish(self, status: str, files: list[Path]) -> None:
        for queued in self.queued:  # every step is on the server before the run ends
            queued.wait()
        for path in files:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)


class _Wandb:
    def __init__(self, config: dict[str, Any], out: Path):
        self.config, self.out, self.run = config, out, None
        self.mode = config.get("mode", "online")
        self.where = f"Weights & Biases ({self.mode})"

    def reachable(self) -> None:
        """Online: a key is set up (WANDB_API_KEY, or `wandb login`'s ~/.netrc entry). The server itself answers
        only at wandb.init; one that does not is dropped there with a warning."""
        if self.mode == "offline" or os.environ.get("WANDB_API_KEY"):
            return
        host = re.sub(r"^https?://", "", os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).split("/")[0]
        try:
            found = netrc.netrc().authenticators(host)
        except (OSError, netrc.NetrcParseError):
            found = None
        if not found:
            raise RuntimeError("no WANDB_API_KEY in the environment and no `wandb login` (or set mode: offline)")

    def start(self, params: dict[str, str], tags: dict[str, str], resume: tuple[str, int] | None) -> None:
        import wandb

        self.out.mkdir(parents=True, exist_ok=True)
        again = {"id": resume[0], "resume": "allow"} if resume is not None and resume[0] else {}
        self.run = wandb.init(
            project=self.config.get("project", "ftc"), entity=self.config.get("entity"),
            name=self.config.get("name", self.out.name), group=self.config.get("group"),
            tags=self.config.get("tags"), mode=self.mode, dir=str(self.out), config={**params, **tags},
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True), **again,
        )  # fmt: skip
        if resume is not None:
            self.run.summary["ftc.resumed_at_step"] = resume[1]
        self.link = {"provider": "wandb", "run_id": self.run.id, "url": self.run.url and redact(self.run.url),
                     "dir": self.run.dir}  # fmt: skip

    def log(self, record: dict[str, Any]) -> None:
        metrics = tracker_metrics(record)
        if metrics:
            self.run.log(metrics, step=record["step"])

    def checkpoint(self, folder: Path, record: dict[str, Any]) -> None:
        import wandb

        self.run.summary["ftc.record_id"] = record["record_id"]
        self.run.summary[f"ftc.record_id.{folder.name}"] = record["record_id"]
        artifact = wandb.Artifact(f"lineage-{folder.name}", type="lineage", metadata={"record_id": record["record_id"]})
        artifact.add_file(str(folder / "lineage.json"))
        self.run.log_artifact(artifact)

    def finish(self, status: str, files: list[Path]) -> None:
        import shutil

        for path in files:  # files in the run's folder are uploaded with it
            shutil.copyfile(path, Path(self.run.dir) / path.name)
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


class _TensorBoard:
    def __init__(self, config: dict[str, Any], out: Path):
        self.folder = out / config.get("log_dir", "tensorboard")
        self.writer = None
        self.where = f"TensorBoard event files in {self.folder}"

    def reachable(self) -> None:
        import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it

    def start(self, params: dict[str, str], tags: dict[str, str], resume: tuple[str, int] | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # resumed: readers drop the interrupted run's events after the checkpoint's step (they are logged again)
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=resume[1] + 1 if resume else None)
        self.link = {"provider": "tensorboard", "dir": str(self.folder)}
        self.writer.add_text("ftc/spec", "\n".join(f"    {k}: {v}" for k, v in sorted(params.items())), 0)
        self.writer.add_text("ftc/lineage", "\n".join(f"    {k}: {v}" for k, v in sorted(tags.items())), 0)

    def log(self, record: dict[str, Any]) -> None:
        for name, value in tracker_metrics(record).items():
            self.writer.add_scalar(name, value, record["step"])

    def checkpoint(self, folder: Path, record: dict[str, Any]) -> None:
        self.writer.add_text("ftc/record_id", f"{folder.name}: {record['record_id']}", int(folder.name.split("-")[-1]))
        self.writer.flush()

    def finish(self, status: str, files: list[Path]) -> None:
        self.writer.add_text("ftc/status", status, 0)
        self.writer.close()


_PROVIDERS = {"mlflow": _MLflow, "wandb": _Wandb, "tensorboard": _TensorBoard}


def _backend(logger: Logger, out: Path) -> Any:
    import importlib.util

    from ftc.images import image_from_env

    package = _EXTRA[logger.provider]
    if importlib.util.find_spec(package) is None:
        # in a container, installing into it is lost with it: the image is what needs the client
        fix = f"pip install 'ftc[{package}]'" if image_from_env() is None else (
            f"run in the runtime image's tracker variant: ftc image build cpu|gpu --tracker {logger.provider} "
            "(docs/images.md), and compile against it")  # fmt: skip
        raise UsageError(f"logger {logger.provider}: the {package} package is not installed\n    fix: {fix}")
    return _PROVIDERS[logger.provider](dict(logger.provider_config), out)


def check_tracker(plan: Plan) -> bool:
    """Before any training process starts: whether the run's tracker (``plan.logger``: the spec's, or for a plan
    from a checkpoint only one the user named) answers. Raises (exit 10) when it does not and the spec says fail;
    returns False (after a warning) when it says warn; True without a tracker too."""
    logger = plan.logger
    if logger is None:
        return True
    backend = _backend(logger, plan.output_path)
    try:
        backend.reachable()
    except NoExperiment as exc:  # the server answered: the experiment is missing, whatever if_unreachable says
        raise InputUnresolvable(
            f"logger: {backend.where} has no experiment {exc.args[0]!r}, and the spec says "
            "create_experiment_if_not_exists: false\n    fix: create the experiment on the server, or set "
            "logger.provider_config.create_experiment_if_not_exists: true",
            reason="input",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any client's failure to answer is the same to the user
        # redacted whole, then cut: a cut inside a URL would keep the part of its password before the cut
        reason = redact(str(exc).splitlines()[0])[:300] if str(exc) else type(exc).__name__
        if logger.if_unreachable == "warn":
            log(f"warning: {backend.where} cannot be reached ({reason}); training with local metrics only")
            return False
        raise InputUnresolvable(
            f"logger: {backend.where} cannot be reached: {reason}\n    fix: start it or correct the address, or set "
            "logger.if_unreachable: warn to train without it",
            reason="unreachable",
        ) from None
    return True


class Tracker:
    """Process 0's tracker for one run; every call after a failure is a no-op (one warning says so)."""

    def __init__(self, backend: Any):
        self.backend = backend
        self.broken = False

    def _call(self, what: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.backend, what)(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker must never stop training
            self.broken = True
            log(f"warning: {self.backend.where} failed ({type(exc).__name__}: {redact(str(exc))[:200]}); "
                "its run stops here, training and metrics.jsonl go on")  # fmt: skip

    def start(self, plan: Plan, out: Path, *, resumed_at: int | None = None) -> None:
        """Start the tracker's run, or continue the interrupted one's (``resumed_at``: the step training resumes
        after), and keep where it is in ``out``/tracker.json."""
        resume = None
        if resumed_at is not None:
            resume = (interrupted_run(out, plan.logger.provider), resumed_at)
        self._call("start", _flat(plan.spec.to_dict()), _tags(plan), resume)
        if self.broken:
            return
        same = resume is not None and (
            resume[0] == self.link.get("run_id") if resume[0] else self.link.get("provider") == "tensorboard"
        )
        again = f" (continuing it after step {resumed_at})" if same else ""
        log(f"tracking in {self.backend.where}: {self.link.get('url') or self.link.get('dir')}{again}")
        try:
            write_text_atomic(out / TRACKER_FILE, json.dumps(self.link, indent=2, sort_keys=True) + "\n")
        except (OSError, UsageError) as exc:  # UsageError: a link planted at tracker.json, refused
            # a tracker never stops training; a later --resume starts a new tracker run
            log(f"warning: cannot keep where the tracker's run is ({exc}); a resumed run would start a new one")

    @property
    def link(self) -> dict[str, Any]:
        """Where the tracker's run is (provider, run id, URL or folder): summary.json names it."""
        return getattr(self.backend, "link", None) or {}

    def log(self, record: dict[str, Any]) -> None:
        self._call("log", record)

    def checkpoint(self, folder: Path, record: dict[str, Any]) -> None:
        self._call("checkpoint", folder, record)

    def finish(self, status: str, files: list[Path]) -> None:
        self._call("finish", status, [f for f in files if f.is_file()])


def open_tracker(plan: Plan, *, main: bool, off: bool = False) -> Tracker | None:
    """The run's tracker on process 0 (None elsewhere, without a logger, or ``off``: when the launcher found it
    unreachable and the spec said to train without it). ``plan.logger``, not the spec's: a plan placed to run from a
    checkpoint feeds no tracker the checkpoint names."""
    logger = plan.logger
    if not main or logger is None or off:
        return None
    return Tracker(_backend(logger, plan.output_path))
