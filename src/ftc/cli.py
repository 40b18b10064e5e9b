"""The ``ftc`` command: thin verbs over library functions; ``main`` turns errors into exit codes through
:func:`ftc.errors.report`.

Nothing heavy is imported at start-up: each verb imports what it needs when it runs, and no verb but ``run``
imports the training stack. Every verb is in this one file (about 350 lines), so the whole command line, its
options and their help, reads in one place; each verb's body is a few lines over a library function.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

import ftc
from ftc.errors import ExitCode, FtcError, report
from ftc.images.build import FLAVORS

__all__ = ["cli", "main"]


_EXIT_CODES_HELP = "\b\nExit codes: " + ", ".join(f"{c.value} {c.name.lower().replace('_', ' ')}" for c in ExitCode)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}, epilog=_EXIT_CODES_HELP
)
@click.option("--debug", is_flag=True, help="Show a traceback with errors.")
@click.version_option(ftc.__version__, prog_name="ftc")
def cli(debug: bool) -> None:
    """ftc: compile a fine-tuning job spec into a pinned run plan, and run it.

    \b
      ftc compile job.yaml -o plan.json    validate the spec, pin every input, write the plan
      ftc run plan.json                    train: full-parameter or LoRA, with DeepSpeed
      ftc plan show plan.json              what the plan will do
      ftc plan diff a.json b.json          what differs between two plans
      ftc data inspect job.yaml            the training data as a run sees it, trained tokens marked
      ftc export runs/x/best -o model/     a standalone Hugging Face model folder (adapter merged)
      ftc generate model/ --prompt "..."   answer in the trained format (a checkpoint or an export)
      ftc eval model/ --data test.jsonl    exact match against the answers in a data file
      ftc report runs/x -o report.html     one HTML page: loss curves, lineage graph, inputs, environment
      ftc schema                           the job spec's JSON Schema
    """


@cli.command("compile")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Where to write the plan; - for stdout. Default: <spec name>.plan.json beside the spec.",
)
@click.option(
    "--allow-unpinned",
    is_flag=True,
    help="Accept an image that cannot be pinned by digest (the plan says the run is not reproducible).",
)
@click.option(
    "--emit",
    type=click.Choice(["k8s", "dvc"]),
    help="k8s: also write <plan>.k8s.yaml, a Kubeflow PyTorchJob that runs the plan (docs/multinode.md). dvc: "
    "instead of compiling, add the spec to a DVC pipeline as a stage that compiles, trains and verifies it.",
)
@click.option(
    "--dvc-file",
    type=click.Path(path_type=Path),
    default="dvc.yaml",
    show_default=True,
    help="With --emit dvc: the pipeline file (made if absent; paths in it are relative to it).",
)
@click.option("--dvc-stage", metavar="NAME", help="With --emit dvc: the stage's name (default: the spec's name).")
@click.option(
    "--k8s-pvc", metavar="NAME", help="With --emit k8s: the PersistentVolumeClaim that holds the plan's folder."
)
@click.option("--k8s-namespace", metavar="NS", help="With --emit k8s: the namespace of the job.")
@click.option(
    "--k8s-gpus-per-node",
    type=click.IntRange(min=0),
    metavar="N",
    help="With --emit k8s: GPUs per pod (default: one per process; 0: train on CPU).",
)
def compile_command(
    spec: Path,
    output: Path | None,
    allow_unpinned: bool,
    emit: str | None,
    k8s_pvc: str | None,
    k8s_namespace: str | None,
    k8s_gpus_per_node: int | None,
    dvc_file: Path,
    dvc_stage: str | None,
) -> None:
    """Validate SPEC, pin every input by content and the image by digest, and write a deterministic run plan."""
    from ftc.compiler import compile_spec, write_plan

    to_stdout = str(output) == "-"
    if output is None:
        output = spec.with_name(spec.stem + ".plan.json")
    if not to_stdout and emit != "dvc":
        _check_output(output)
        if emit == "k8s":  # written beside the plan
            _check_output(output.with_name(f"{output.stem}.k8s.yaml"))
    if emit == "dvc":
        from ftc.compiler import write_dvc_stage

        written, name = write_dvc_stage(spec, output, dvc_file, dvc_stage)
        click.echo(f"wrote stage {name} to {written}: `dvc repro` compiles, trains and verifies it", err=True)
        return
    if emit == "k8s" and (to_stdout or not k8s_pvc):
        raise click.UsageError(
            "--emit k8s writes <plan>.k8s.yaml beside the plan: give -o PLAN (a file) and --k8s-pvc NAME"
        )
    if emit is None and (k8s_pvc or k8s_namespace or k8s_gpus_per_node is not None):
        raise click.UsageError("--k8s-pvc, --k8s-namespace and --k8s-gpus-per-node go with --emit k8s")
    k8s = {"pvc": k8s_pvc, "namespace": k8s_namespace, "gpus_per_node": k8s_gpus_per_node}
    result = compile_spec(spec, plan_dir=Path.cwd() if to_stdout else output.parent, allow_unpinned=allow_unpinned)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    files = result.cache_hits + result.cache_misses
    summary = f"plan {result.plan.plan_id} ({files} input files, {result.cache_hits} unchanged since last hashed)"
    if to_stdout:
        click.echo(result.plan.text(), nl=False)
        click.echo(summary, err=True)
    else:
        if emit == "k8s":  # checked before the plan is written: a plan the cluster cannot run is not left behind
            from ftc.compiler import k8s_manifest

            k8s_manifest(result.plan, plan_name=output.name, **k8s)
        write_plan(result.plan, output)
        click.echo(f"wrote {output}: {summary}", err=True)
        if emit == "k8s":
            from ftc.compiler import write_k8s_manifest

            manifest = write_k8s_manifest(result.plan, output, **k8s)
            click.echo(
                f"wrote {manifest}: `kubectl apply -f {manifest}` once the volume {k8s_pvc} holds the plan's folder",
                err=True,
            )


@cli.command("schema")
@click.option("--plan", "which", flag_value="plan", help="Print the run plan's schema instead.")
@click.option("--lineage", "which", flag_value="lineage", help="Print the lineage record's schema instead.")
@click.option("--markdown", "which", flag_value="markdown", help="Print the spec reference page (docs/spec.md).")
def schema_command(which: str | None) -> None:
    """Print the job spec's JSON Schema (draft 2020-12)."""
    from ftc.spec import job_schema, lineage_schema, plan_schema

    if which == "markdown":
        from ftc.spec.docs import render_spec_reference

        click.echo(render_spec_reference(), nl=False)
        return
    click.echo(json.dumps({"plan": plan_schema, "lineage": lineage_schema}.get(which or "", job_schema)(), indent=2))


@cli.group("plan")
def plan_group() -> None:
    """Inspect compiled plans."""


@plan_group.command("show")
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the plan itself.")
def plan_show(plan: Path, as_json: bool) -> None:
    """Show what PLAN will do: inputs and their pins, settings, launch, image."""
    from ftc.compiler import describe_plan
    from ftc.spec.plan import read_plan

    document = read_plan(plan)
    if as_json:  # every non-ASCII character as a JSON escape: the same plan, and nothing a terminal obeys
        click.echo(json.dumps(document.to_dict(), sort_keys=True, indent=2, ensure_ascii=True))
    else:
        click.echo(describe_plan(document))


@plan_group.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
def plan_diff(a: Path, b: Path) -> None:
    """Say what differs between plans A and B: inputs, settings, image."""
    from ftc.compiler import diff_plans
    from ftc.spec.plan import read_plan

    lines = diff_plans(read_plan(a), read_plan(b))
    click.echo("\n".join(lines) if lines else "the plans are identical")


@cli.group("lineage")
def lineage_group() -> None:
    """Show, verify and export where a checkpoint came from (its lineage.json)."""


@lineage_group.command("show")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]), default="text", show_default=True
)
@click.option("--paths", is_flag=True, help="Also say where each parent is on this machine.")
def lineage_show(checkpoint: Path, fmt: str, paths: bool) -> None:
    """The chain from CHECKPOINT (a checkpoint, or a run's output folder) up to its roots."""
    from ftc.lineage import checkpoint_folder, load
    from ftc.lineage.show import render
    from ftc.lineage.signature_check import SIGNATURE_FILE, signature_note

    click.echo(render(load(checkpoint), fmt, folder=checkpoint_folder(checkpoint) if paths else None))
    signature = checkpoint_folder(checkpoint) / SIGNATURE_FILE
    if fmt == "text" and (signature.exists() or signature.is_symlink()):  # FTC_TRUSTED_KEYS; files as recorded
        click.echo(f"signature: {signature_note(signature.parent, load(checkpoint))}")


@lineage_group.command("verify")
@click.argument("checkpoint")
@click.option(
    "--trusted-key",
    "trusted",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A signer's PEM public key you trust, or a folder of *.pem keys (repeatable; also FTC_TRUSTED_KEYS).",
)
@click.option(
    "--require-signature", is_flag=True, help="Exit 12 unless every checkpoint of the chain is signed by a trusted key."
)
def lineage_verify(checkpoint: str, trusted: tuple[Path, ...], require_signature: bool) -> None:
    """Re-hash CHECKPOINT's files and every reachable parent's, and recompute every record_id. CHECKPOINT: a folder,
    or a checkpoint a run published (s3://…/checkpoints/step-N/, gs://…), downloaded and checked against its
    marker first. Then say of each checkpoint of the chain: signed by a key (trusted or not), unsigned but
    consistent, or broken (docs/security.md)."""
    from ftc.lineage import load_trusted_keys, trusted_keys_from_env, verify
    from ftc.lineage.signature_check import signature_lines
    from ftc.spec.text import for_terminal

    keys = load_trusted_keys(trusted) + trusted_keys_from_env()  # a key that cannot be read: before any hashing
    signatures: list = []
    record, count, rehashed, unreached = verify(checkpoint, trusted_keys=keys, signatures=signatures)
    files = len(record["checkpoint"]["files"])

    def say(line: str) -> None:  # names and locations come from records: their control characters shown
        click.echo(for_terminal(line))

    say(
        f"verified: {files} files of {record['checkpoint']['name']} re-hashed, {count} lineage record(s) in the chain"
        f" recomputed (record {record['record_id']})"
    )
    for parent in rehashed:
        say(f"re-hashed parent: {parent}")
    for parent in unreached:
        say(f"not re-hashed (not found here; its record was checked): {parent}")
    for line in signature_lines(signatures, require=require_signature):
        say(f"signature: {line}")


@lineage_group.command("sign")
@click.argument("checkpoint", type=click.Path(path_type=Path))
def lineage_sign(checkpoint: Path) -> None:
    """Sign CHECKPOINT (a checkpoint, an export, or a run's output folder) with the key FTC_SIGNING_KEY names, once
    its files verify: for checkpoints written where no key was (the docker backend). Writes CHECKPOINT/model.sig."""
    from ftc.lineage import sign
    from ftc.spec.text import for_terminal

    folder, by = sign(checkpoint)
    click.echo(for_terminal(f"signed {folder} with {by}: {folder / 'model.sig'}"))


@lineage_group.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lineage_diff(a: Path, b: Path, fmt: str) -> None:
    """Why checkpoints A and B differ: inputs (by pin), settings (key by key), environment (package by package),
    topology and results, as their lineage records and plans say."""
    import json

    from ftc.lineage.diff import diff_checkpoints

    found = diff_checkpoints(a, b)
    click.echo(json.dumps(found.to_dict(), indent=2) if fmt == "json" else found.text())


@lineage_group.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["openlineage", "cyclonedx", "model-card"]), required=True)
def lineage_export(checkpoint: Path, fmt: str) -> None:
    """CHECKPOINT's lineage as an OpenLineage run event, a CycloneDX 1.6 ML-BOM, or a Hugging Face model card."""
    from datetime import datetime, timezone

    from ftc.lineage import LINEAGE_FILE, checkpoint_folder, load
    from ftc.lineage.export import export

    written = (checkpoint_folder(checkpoint) / LINEAGE_FILE).stat().st_mtime  # when the checkpoint was completed
    click.echo(
        export(load(checkpoint), fmt, datetime.fromtimestamp(written, timezone.utc).isoformat().replace("+00:00", "Z"))
    )


class _FiniteFloat(click.FloatRange):
    """A FloatRange that is also finite: nan passes every comparison of a range check, and inf is no setting."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def _sampling_options(command):
    """--max-new-tokens, --temperature, --top-p and --seed, shared by generate and eval."""
    options = [
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True),
        click.option(
            "--temperature", type=_FiniteFloat(min=0), default=0.0, show_default=True, help="0: greedy."
        ),
        click.option("--top-p", type=_FiniteFloat(min=0, max=1, min_open=True), default=1.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True, help="Of sampling (temperature > 0)."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Default: float32 on "
                     "a CPU, bfloat16 on a GPU."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@cli.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The new export folder.")
@click.option(
    "--merge/--no-merge",
    default=None,
    help="Merge a LoRA adapter into the exact base weights it was trained on (default), or export the adapter.",
)
@click.option("--max-shard-size", default="5GB", show_default=True, help="Largest safetensors shard of a merge.")
def export_command(checkpoint: Path, output: Path, merge: bool | None, max_shard_size: str) -> None:
    """Write CHECKPOINT as a standalone Hugging Face model folder: weights (an adapter merged into its base), the
    tokenizer with a chat template that renders the trained prompt format token for token, generation_config.json
    with the stop tokens, a model card and a lineage record that `ftc lineage verify` checks."""
    from ftc.serving.export import export_checkpoint

    _check_output(output, folder=True, reads=checkpoint)
    done = export_checkpoint(
        checkpoint, output, merge=merge, max_shard_size=max_shard_size, log=lambda m: click.echo(m, err=True)
    )
    how = "merged into its base" if done.merged else "as it is"
    click.echo(
        f"exported {how} to {done.folder} ({done.files} files, {done.size / 2**20:.1f} MiB, {done.dtype}); "
        f"lineage record {done.record_id}"
    )


@cli.command("generate")
@click.argument("model", metavar="CHECKPOINT|EXPORT", type=click.Path(path_type=Path))
@click.option("--prompt", help="One user turn to answer.")
@click.option("--system", help="With --prompt: a system message before it.")
@click.option(
    "--messages",
    "messages_file",
    type=click.Path(path_type=Path),
    help="A chat-JSONL file: answer each conversation (a last assistant turn, if any, is replaced).",
)
@_sampling_options
def generate_command(
    model: Path, prompt: str | None, system: str | None, messages_file: Path | None, **options
) -> None:
    """Answer with MODEL (a checkpoint: its adapter on the exact base it was trained on; or an export), prompted
    in the trained format, stopping at its stop text; the answer is streamed as it is generated."""
    from ftc.errors import UsageError
    from ftc.serving.generate import conversations, open_session

    if (prompt is None) == (messages_file is None):
        raise UsageError("give --prompt TEXT or --messages FILE.jsonl (one of them)")
    if prompt is not None:
        turns = [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]
        chats = [("--prompt", turns)]
    else:
        chats = []
        for line, messages in conversations(messages_file, require_answer=False):
            while messages and messages[-1]["role"] == "assistant":
                messages = messages[:-1]
            chats.append((f"{messages_file}:{line}", messages))
    sampling, dtype = _sampling(options)
    session = open_session(model, dtype=dtype)
    prompts = [session.prompt(messages, where) for where, messages in chats]  # all checked before any answer
    for i, ids in enumerate(prompts):
        if i:
            click.echo()
        result = session.generate(ids, sampling, on_text=lambda text: click.echo(text, nl=False))
        click.echo()
        if result.finish_reason == "length":
            click.echo(f"(stopped at --max-new-tokens {sampling.max_new_tokens})", err=True)


@cli.command("eval")
@click.argument("model", metavar="CHECKPOINT|EXPORT", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True, help="Chat-JSONL examples with answers.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Per-example outputs (JSONL). Default: <data>.eval.jsonl"
)
@_sampling_options
def eval_command(model: Path, data: Path, output: Path | None, **options) -> None:
    """Answer every example of --data in place of its last assistant turn and score exact match (whitespace
    normalized): per-example outputs to --output, the aggregate as JSON on stdout."""
    from ftc.serving.generate import evaluate, open_session

    out = output or data.with_name(data.stem + ".eval.jsonl")
    _check_output(out, reads=model, also=data)
    sampling, dtype = _sampling(options)
    session = open_session(model, dtype=dtype)
    result = evaluate(session, data, out, sampling=sampling)
    click.echo(json.dumps(result, indent=2))


def _check_output(output: Path, *, folder: bool = False, reads: Path | None = None, also: Path | None = None) -> None:
    """Refuse ``-o`` before any work: a link, a device, a FIFO, a socket, a folder where a file goes (or a file
    where a folder goes), or a path inside the checkpoint ``reads`` (a run's output folder: any of its checkpoints)
    or the file ``also`` that the command reads."""
    from ftc.stores.atomic import check_output_path

    check_output_path(output, folder=folder, not_inside=[also] if also is not None else [])
    if reads is not None and reads.is_dir():
        from ftc.lineage import checkpoint_folder

        found = checkpoint_folder(reads)
        check_output_path(
            output, folder=folder, not_inside=[found] if found == reads else [found, reads / "checkpoints"]
        )


def _sampling(options: dict):
    from ftc.runtime.training.generation import Sampling

    sampling = Sampling(options["max_new_tokens"], options["temperature"], options["top_p"], options["seed"])
    return sampling, options["dtype"]


@cli.command("report")
@click.argument("checkpoint", metavar="CHECKPOINT|RUN", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The HTML file to write.")
def report_command(checkpoint: Path, output: Path) -> None:
    """One self-contained HTML page (no network) of CHECKPOINT (a run's best, else latest): the loss curves, the
    lineage graph with each ancestor's digest, data, eval loss and whether it verifies here, the pinned inputs, the
    settings and the environment."""
    from ftc.errors import LineageBroken
    from ftc.lineage import checkpoint_folder
    from ftc.lineage.report import report_html
    from ftc.stores.atomic import write_text_atomic

    _check_output(output, reads=checkpoint)
    try:
        page = report_html(checkpoint_folder(checkpoint))
    except ValueError as exc:
        raise LineageBroken(str(exc)) from None
    write_text_atomic(output, page)
    click.echo(f"wrote {output} ({len(page.encode()) / 1024:.0f} KiB)")


@cli.group("data")
def data_group() -> None:
    """Look at training data as a run will see it."""


@data_group.command("inspect")
@click.argument("spec_or_plan", metavar="SPEC|PLAN", type=click.Path(path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=0), default=3, show_default=True, help="Examples to show.")
@click.option("--split", type=click.Choice(["train", "valid"]), default="train", show_default=True)
@click.option("--boundaries", is_flag=True, help="Show token boundaries as '|'.")
@click.option(
    "--color/--no-color",
    default=None,
    help="Mark trained tokens in colour (default: on a terminal), else [in brackets].",
)
def data_inspect(spec_or_plan: Path, count: int, split: str, boundaries: bool, color: bool | None) -> None:
    """Render examples of SPEC|PLAN's data exactly as training will, trained tokens marked; then statistics over
    the whole file (tokens, trained share, lengths against context_length, packing) and warnings."""
    from ftc.runtime.training.inspect import inspect_data

    plan = _plan_of(spec_or_plan)
    color = sys.stdout.isatty() if color is None else color
    click.echo(inspect_data(plan, split=split, n=count, boundaries=boundaries, color=color), color=color)


def _plan_of(path: Path):
    """The plan at ``path``, or the one the spec there compiles to (in memory: nothing is written)."""
    from ftc.compiler import compile_spec
    from ftc.spec.plan import PLAN_LIMIT, read_plan
    from ftc.spec.reading import read_bounded_text

    if path.suffix == ".json":  # a plan, or a spec written as JSON: a plan is the one with a plan_id
        try:
            document = json.loads(read_bounded_text(path, limit=PLAN_LIMIT, what="plan"))
        except ValueError:
            document = {"plan_id": None}  # not JSON at all: read_plan says what is wrong with it
        if isinstance(document, dict) and "plan_id" in document:
            return read_plan(path)
    return compile_spec(path, plan_dir=path.parent).plan


@cli.command("reproduce")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="A new folder for the rerun.")
@click.option(
    "--rtol", type=click.FloatRange(min=0), default=1e-2, show_default=True,
    help="Relative tolerance per tensor for 'numerically reproduced': |a - b| <= atol + rtol * max|a|.",
)  # fmt: skip
@click.option("--atol", type=click.FloatRange(min=0), default=1e-6, show_default=True, help="Absolute tolerance.")
@click.option(
    "--logger", "tracker", type=click.Choice(["off", "mlflow", "wandb", "tensorboard"]), default="off",
    show_default=True,
    help="Feed this tracker, set up from the environment alone (MLFLOW_TRACKING_URI, WANDB_*; TensorBoard: OUTPUT/"
    "tensorboard). The checkpoint's own logger is never used: its plan is outside input.",
)  # fmt: skip
def reproduce_command(checkpoint: Path, output: Path, rtol: float, atol: float, tracker: str) -> None:
    """Rerun CHECKPOINT's own plan from its pinned inputs into OUTPUT and compare every file: bitwise reproduced,
    numerically reproduced (within the tolerance), or not reproduced (exit 16, with the likely causes). The rerun
    writes only into OUTPUT (and ftc's cache) and reports to no tracker unless --logger names one."""
    from ftc.runtime.launch.reproduce import REPORT_FILE, reproduce

    found = reproduce(checkpoint, output, rtol=rtol, atol=atol, tracker=tracker)
    click.echo(found.text())
    click.echo(f"report: {output / REPORT_FILE}")


@cli.group("image")
def image_group() -> None:
    """Build the runtime images (from a checkout of ftc)."""


@image_group.command("build")
@click.argument("flavor", type=click.Choice(FLAVORS), default="cpu")
@click.option("-t", "--tag", help="Tag for the image. Default: ftc-runtime:<version>-<flavor>.")
@click.option(
    "--context",
    type=click.Path(path_type=Path, file_okay=False),
    help="The checkout to build from. Default: the one this ftc runs from.",
)
@click.option(
    "--base",
    metavar="IMAGE",
    help="The base image (any with Python 3.11, venv and CA certificates; images/debian-base.sh makes one offline)."
    " Default: the pinned python:3.11 image of images/versions.txt.",
)
@click.option(
    "--network",
    metavar="MODE",
    help="The network of the build's RUN steps (e.g. host, where the engine has no bridge). Default: the engine's.",
)
@click.option(
    "--build-arg", "build_args", multiple=True, metavar="NAME=VALUE", help="Passed to the Dockerfile (repeatable)."
)
def image_build(
    flavor: str,
    tag: str | None,
    context: Path | None,
    base: str | None,
    network: str | None,
    build_args: tuple[str, ...],
) -> None:
    """Build images/Dockerfile.FLAVOR through the engine at DOCKER_HOST and tag it.

    Offline: `--base` an image made by images/debian-base.sh, `--network host`, and `--build-arg PIP_INDEX_URL=...`
    (or PIP_EXTRA_INDEX_URL, TORCH_INDEX_URL for the CPU image's torch) naming an index this machine reaches."""
    from ftc.errors import UsageError
    from ftc.images.build import build_image

    args = {}
    for item in build_args:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--build-arg {item}: give NAME=VALUE")
        args[name] = value
    if base:
        args["BASE_IMAGE"] = base
    built = build_image(
        flavor, tag=tag, context=context, build_args=args, network=network, log=lambda line: click.echo(line, err=True)
    )
    click.echo(
        f"built {built.tag} ({built.image_id}, {built.size_bytes / 1e9:.2f} GB) in {built.seconds:.0f} s;"
        f" name it in a spec (`image: {built.tag}`): `ftc compile` pins it by digest"
    )


@cli.command("run")
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the plan's output folder.")
@click.option(
    "--node-rank",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="This machine's rank in a multi-node plan.",
)
@click.option("--master-addr", default="127.0.0.1", show_default=True, help="Address of node 0 (multi-node plans).")
@click.option(
    "--master-port",
    type=click.IntRange(1, 65535),
    default=29500,
    show_default=True,
    help="Port on node 0 for the rendezvous.",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "local", "docker", "ray"]),
    default="auto",
    show_default=True,
    help=(
        "local: this Python environment. docker: the plan's image, through the engine at DOCKER_HOST. "
        "ray: a Ray cluster (--address), through Ray Train. "
        "auto: docker when the plan names an image and an engine answers, else local."
    ),
)
@click.option("--address", "ray_address", metavar="ADDR", help="ray backend: the cluster (default: RAY_ADDRESS).")
@click.option(
    "--max-failures",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="ray backend: how many times a failed worker group is restarted (each restart resumes).",
)
@click.option(
    "--gpus",
    default="auto",
    show_default=True,
    help=(
        "docker backend: GPUs for the container: "
        "auto (all when the engine has the NVIDIA runtime), all, none, or a number."
    ),
)
@click.option(
    "--mount",
    "mounts",
    multiple=True,
    metavar="PATH",
    help="docker backend: also mount PATH read-only at the same path (repeatable).",
)
def run_command(
    plan: Path,
    resume: bool,
    node_rank: int,
    master_addr: str,
    master_port: int,
    backend: str,
    ray_address: str | None,
    max_failures: int,
    gpus: str,
    mounts: tuple[str, ...],
) -> None:
    """Train: validate PLAN, check every input against its pinned digest, then run it (DeepSpeed).

    A multi-node plan runs one `ftc run PLAN --node-rank K --master-addr HOST` per machine.
    """
    import signal

    from ftc.runtime.launch import Rendezvous, run

    # `kill` (SIGTERM), or the terminal or SSH session going away (SIGHUP), stops a run the way Ctrl-C does: worker
    # processes and containers are cleaned up
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    run(
        plan,
        backend=backend,
        gpus=gpus,
        mounts=mounts,
        ray_address=ray_address,
        max_failures=max_failures,
        log=lambda line: click.echo(line, err=True),
        resume=resume,
        rendezvous=Rendezvous(node_rank, master_addr, master_port),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every error into its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        result = cli.main(args=args, prog_name="ftc", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe shows here at the latest, not at the interpreter's exit
        return int(result) if isinstance(result, int) else ExitCode.OK
    except BrokenPipeError:
        return _reader_went_away()
    except SystemExit:  # click ends a command whose stdout was closed with exit 1, after pacifying its streams
        if _stdout_closed():
            return _reader_went_away()
        raise
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # click's name for Ctrl-C
        return report(KeyboardInterrupt(), debug=debug)
    except click.ClickException as exc:
        exc.show()
        return ExitCode.USAGE
    except (Exception, KeyboardInterrupt) as exc:
        if isinstance(exc, FtcError) and len(exc.args) == 1:  # messages quote outside text (records, plans, data)
            from ftc.spec.text import for_terminal

            exc.args = (for_terminal(str(exc), newlines=True),)  # shown with its control characters escaped
        return report(exc, debug=debug)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has closed it (the kernel flags the write end with an error)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno(), 0)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _reader_went_away() -> int:
    """The reader of stdout closed it (``ftc schema | head -1``): not an error, as for any Unix filter. What is
    still buffered goes nowhere, so that the interpreter's last flush does not fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return ExitCode.OK


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
