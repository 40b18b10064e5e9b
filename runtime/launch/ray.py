"""``ftc run PLAN --backend ray``: the plan on an existing Ray cluster, through Ray Train.  The driver (this process)
checks the plan and its inputs as ``ftc run`` always does, holds the output folder's lock, and starts a ``TorchTrainer``
of ``launch.world_size`` workers (one CPU, or one GPU, each, and the spec's ``worker_resources``; spread over the
cluster's nodes: a plan whose resources no node offers is refused before it is submitted, exit 13). Ray Train sets up
the process group (gloo on CPUs, NCCL on GPUs); each worker runs ftc's own recipe for the plan's task
(``ftc.runtime.recipes.recipe_for``: the same DeepSpeed initialization, over that process group, the same
checkpoints and lineage). Workers materialize remote inputs through ftc's content cache on their node and verify
every digest (a node that sees other bytes fails as ``ftc run`` does, exit 6).

A worker that dies makes Ray Train restart the group (``--max-failures``, default 2); the restarted workers resume
from the newest verified checkpoint. Ctrl-C on the driver stops the job on the cluster. A worker's ftc error comes
back with its exit code and message, not a Ray traceback.

Local inputs and the output folder are named by absolute paths: every node must see them at those paths (a shared
file system). Inputs in S3, GCS or DVC remotes need nothing shared.

The run reads as a local run does (``ray_output``): the rank-0 worker's output, each line once, its paths absolute;
Ray's own messages and the other workers' output go to a log file the driver names at the end. The workers write
no temporary file (the plan reaches them as text); Ray Train's run folder is the driver's, removed when it ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ftc.errors import EngineUnavailable, FtcError, TrainingFailed, UsageError
from ftc.spec.plan import Placement, Plan
from ftc.stores.scratch import scratch_folder
from ftc.stores.sources import SOURCES

from .outcome import exceptions_in, outcome_exception, outcome_from_exception

__all__ = ["absolute_placement", "run_on_ray"]


def run_on_ray(
    plan: Plan,
    plan_path: Path,
    *,
    address: str | None = None,
    max_failures: int = 2,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Run ``plan`` (read from ``plan_path``) on the Ray cluster at ``address`` (else RAY_ADDRESS, else a local
    one Ray finds)."""
    # Ray Train's current engine (the controller needs no CPU of its own), without its migration notices, and
    # without its copy of each print of a worker into its logger (a second copy of every line ftc prints)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    try:
        import ray
        import ray.train.torch  # noqa: F401 (Ray Train itself, not only Ray)
        from ray.util.queue import Queue
    except ImportError:
        raise UsageError("--backend ray needs Ray Train: pip install 'ftc[ray]'") from None
    from .lock import output_lock
    from .ray_output import QUEUE_OPTIONS, logged_to, ray_log_path, shown

    if plan.launch.nodes != 1:
        raise UsageError(
            "--backend ray places the plan's processes itself: compile it for one node with num_devices processes"
            f" (this plan has {plan.launch.nodes} nodes of {plan.launch.processes_per_node})"
        )
    publisher, complete = _check_before(plan, resume=resume)
    if complete:
        return
    where = address or os.environ.get("RAY_ADDRESS") or "auto"
    ray_log = ray_log_path(plan.plan_id)
    _connect(ray, where, ray_log)
    scratch = str(scratch_folder("ray"))  # Ray Train's own run folder: ftc keeps nothing there
    try:
        gpu = _cluster_has_gpus(ray)
        request = _requested(ray, plan, gpu, where=where, log=log)  # before anything is submitted
        queue = Queue(actor_options=QUEUE_OPTIONS)  # the rank-0 worker's output, to show here
        trainer = _trainer(
            plan, plan_path, scratch, gpu, request, queue, max_failures=max_failures, where=where, log=log
        )  # fmt: skip
        with output_lock(plan.output_path, node_rank=0, plan_id=plan.plan_id):
            user = sys.stdout, sys.stderr
            with logged_to(ray_log):  # from here until Ray is shut down, whatever Ray prints goes to its log
                try:
                    with shown(queue, *user):
                        _fit(trainer)
                finally:
                    ray.shutdown()
            if not _ended(plan, publisher):  # Ray returned without the run's end: it was aborted
                raise KeyboardInterrupt
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
        if ray_log.exists():
            log(f"ray: Ray's own messages and every worker's output are in {ray_log}")


def _fit(trainer: Any) -> None:
    """Ray Train's run of the workers, its failure as ftc's error."""
    try:
        trainer.fit()  # Ctrl-C here: Ray Train's own handler aborts the job on the cluster, then returns
    except SystemExit:  # ... or exits (a second Ctrl-C, or the controller already gone)
        raise KeyboardInterrupt from None
    except Exception as exc:  # Ray's error around the worker's
        raise _ftc_error(exc) from None


def _check_before(plan: Plan, *, resume: bool) -> tuple[Any, bool]:
    """The driver's checks before the cluster is asked: the plan's inputs (each worker verifies what it reads), the
    store prefix of an output_dir in a store, the checkpoint to resume. (its publisher or None, the run is complete)"""
    from ftc.runtime.training.checkpoint import is_complete
    from ftc.runtime.training.inputs import verify_inputs
    from ftc.runtime.training.progress import log as say
    from ftc.runtime.training.resume import resume_point

    verify_inputs(plan)
    publisher = None
    if plan.output_store is not None:  # the rank-0 worker uploads; the driver checks the prefix first
        from .publish import Publisher

        publisher = Publisher(plan.output_store, plan.output_path)
        publisher.check_start(resume=resume, staged_here=False)
        if resume and publisher.finished():
            say(f"{plan.output_store}: the last checkpoint of this plan is published: the run is complete")
            return publisher, True
    previous = resume_point(plan.output_path, plan.plan_id, resume=resume)
    if previous is not None and is_complete(previous.folder):
        say(f"{previous.folder} is the last checkpoint of this plan: the run is complete; nothing to resume")
        return publisher, True
    return publisher, False


def _connect(ray: Any, where: str, ray_log: Path) -> None:
    """Connect to the cluster at ``where``, what Ray says meanwhile in ``ray_log``; exit 13 naming why not."""
    from ftc.stores.storage import storage_failure

    from .ray_output import descriptors_logged_to

    _answers(where)  # Ray itself keeps retrying an address nobody answers at for minutes
    try:  # the log's folder is ftc's cache: one that cannot be written is said as such, not as a missing cluster
        ray_log.parent.mkdir(parents=True, exist_ok=True)
        ray_log.touch()
    except OSError as exc:
        raise storage_failure(ray_log.parent, exc, "keeping Ray's messages", "cache") or exc from None
    start = ray_log.stat().st_size
    try:
        with descriptors_logged_to(ray_log):
            ray.init(address=where, logging_level="ERROR", log_to_driver=True, configure_logging=False)
    except Exception as exc:  # ConnectionError, or Ray's own when nothing answers
        with open(ray_log, "rb") as said:
            said.seek(start)
            if b"InvalidAuthToken" in said.read(1 << 24):  # Ray's core says so in its log lines, not the exception
                raise EngineUnavailable(
                    f"the Ray cluster at {where} refused this driver: it asks for an authentication token"
                    " (Ray's token authentication), and this environment has none or another"
                    "\n    fix: set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) as on the"
                    f" cluster's nodes (Ray's messages: {ray_log})"
                ) from None
        raise EngineUnavailable(
            f"no Ray cluster answers at {where}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            "\n    fix: start one (`ray start --head`) or name it with --address / RAY_ADDRESS"
        ) from None


def _requested(ray: Any, plan: Plan, gpu: bool, *, where: str, log) -> dict[str, float] | None:
    """Each worker's Ray resources when the plan asks for more than a CPU or GPU (its worker_resources), after
    checking that the cluster's nodes hold them and the trainer's (exit 13 at once, not a job waiting for ever)."""
    from ftc.spec.resources import describe_resources as describe

    from .resources import check_cluster, worker_request

    request = worker_request(plan, gpu)
    trainer = dict(plan.spec.trainer_resources)
    if request is None and not trainer:
        return None
    per_worker = request or ({"GPU": 1.0} if gpu else {"CPU": 1.0})
    check_cluster(ray.nodes(), per_worker, trainer, plan.launch.world_size, where)
    if request is not None:
        log(f"ray: each worker asks for {describe(request)}")
    if trainer:
        log(
            f"ray: the trainer's {describe(trainer)}: a node holds them beside a"
            " worker's (checked; Ray Train's engine gives its trainer no resources of its own, so none are reserved)"
        )
    return request


def _trainer(
    plan: Plan,
    plan_path: Path,
    scratch: str,
    gpu: bool,
    request: dict | None,
    queue: Any,
    *,
    max_failures: int,
    where: str,
    log,
) -> Any:
    """Ray Train's TorchTrainer of the plan's workers, one CPU or GPU each (and the plan's worker_resources),
    spread over the cluster; the workers get the plan's text, its folder, where its inputs and output are and the
    queue rank 0's output goes through (the launcher-to-worker handoff on Ray)."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    world = plan.launch.world_size
    image = plan.image.ref if plan.image is not None else None
    log(
        f"ray: {world} worker(s) ({'a GPU' if gpu else 'a CPU'} each) on the cluster at {where};"
        + (f" the plan's image {image} is not used: the workers run the cluster's Python" if image else "")
    )
    placed = absolute_placement(plan)
    return TorchTrainer(
        _worker,
        train_loop_config={
            "plan": plan_path.read_text(encoding="utf-8"),
            "folder": str(plan_path.resolve().parent),
            "name": str(plan_path),
            "placement": placed.to_dict(),
            "output": queue,
        },
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=world, use_gpu=gpu, resources_per_worker=request, placement_strategy="SPREAD"
        ),
        run_config=RunConfig(
            name=f"ftc-{plan.plan_id.removeprefix('sha256:')[:12]}",
            storage_path=scratch,
            failure_config=FailureConfig(max_failures=max_failures),
        ),
    )


def _ended(plan: Plan, publisher: Any) -> bool:
    """Whether the run reached its end: its last checkpoint is complete (in the store, when it publishes: the
    workers' nodes staged it)."""
    from ftc.runtime.training.checkpoint import is_complete, latest_checkpoint

    if publisher is not None:
        return publisher.finished()
    last = latest_checkpoint(plan.output_path)
    return last is not None and is_complete(last)


def _answers(where: str, timeout: float = 5.0) -> None:
    """An explicit HOST:PORT (the cluster's GCS) must accept a connection within ``timeout``; ``auto`` is left to
    Ray (it finds a cluster started on this machine, or says there is none)."""
    import socket

    found = re.fullmatch(r"(?:ray://)?\[?([^\]]+?)\]?:(\d+)", where)
    if found is None:
        return
    try:
        socket.create_connection((found.group(1), int(found.group(2))), timeout=timeout).close()
    except OSError as exc:
        raise EngineUnavailable(
            f"no Ray cluster answers at {where} ({exc.strerror or exc})"
            "\n    fix: start one (`ray start --head`) or name it with --address / RAY_ADDRESS"
        ) from None


def _cluster_has_gpus(ray: Any) -> bool:
    return float(ray.cluster_resources().get("GPU", 0)) > 0


def absolute_placement(plan: Plan) -> Placement:
    """Where the plan's local inputs and output are, as absolute paths every node uses (the plan file itself is
    sent to the workers as text, so its folder is not theirs)."""
    locations = dict(plan.placement.locations) if plan.placement is not None else {}
    for item in plan.inputs.values():
        if SOURCES[item.source].on_disk:
            locations.setdefault(item.uri, str(plan.locate(item.uri).resolve()))
    if plan.output_store is None:  # a store prefix: each worker stages in its own node's cache, rank 0 uploads
        locations.setdefault(plan.output_dir, str(plan.output_path.resolve()))
    base = plan.placement or Placement()
    return replace(base, locations=locations)


def _worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: ftc's recipe, as one rank of the plan (a restart resumes from the newest checkpoint)."""
    import ray.train

    from ftc.errors import report
    from ftc.spec.plan import valid_plan
    from ftc.spec.reading import finite_json

    from .ray_output import forwarding

    context = ray.train.get_context()
    os.environ.update(
        {
            "RANK": str(context.get_world_rank()),
            "LOCAL_RANK": str(context.get_local_rank()),
            "WORLD_SIZE": str(context.get_world_size()),
            "LOCAL_WORLD_SIZE": str(context.get_local_world_size()),
            "HF_HUB_OFFLINE": "1",
        }
    )
    main = context.get_world_rank() == 0
    try:
        # the plan's text, checked as every plan read is, in the plan's own folder (a file written here would be
        # left behind by a killed worker)
        plan = valid_plan(finite_json(config["plan"]), Path(config["folder"]), name=config["name"])
        plan = replace(plan, placement=Placement.from_dict(config["placement"]))
        from ftc.runtime.recipes import recipe_for

        from .publish import publishing

        train = recipe_for(plan.spec.task)
        # rank 0's output is what the user reads, as from a local run; the driver refused a used output folder
        # unless --resume was given; rank 0 uploads to a store prefix
        with forwarding(config["output"]) if main else contextlib.nullcontext():
            with publishing(plan, resume=True) if main else contextlib.nullcontext():
                train(plan, resume=True)
    except FtcError as exc:  # its outcome note crosses to the driver (Ray carries exceptions, not files)
        report(exc)
        raise outcome_exception(exc) from None


def _ftc_error(exc: BaseException) -> FtcError:
    """The ftc error a worker's outcome note inside Ray's exception tells, or a training failure naming Ray's."""
    sent = outcome_from_exception(exc)
    if sent is not None:
        return sent
    text = "\n".join(str(e) for e in exceptions_in(exc))
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    return TrainingFailed(f"the Ray job failed: {first[:500]}\n    (the workers' output above says more)")
