"""``ftc compile``: a spec -> a pinned run plan (and, asked, a Kubernetes manifest or a DVC stage)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compile")
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
    help="With --emit k8s: GPUs per pod (0: train on CPU). Default: worker_resources' whole GPU count per process; "
    "none for a CPU image (tagged cpu or *-cpu); else one per process.",
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
    from ftc.compiler import compile_spec, write_dvc_stage, write_plan, write_plan_for_k8s
    from ftc.lineage.outputs import check_output_outside

    to_stdout = str(output) == "-"
    if output is None:
        output = spec.with_name(spec.stem + ".plan.json")
    if not to_stdout and emit != "dvc":
        check_output_outside(output)
        if emit == "k8s":  # written beside the plan
            check_output_outside(output.with_name(f"{output.stem}.k8s.yaml"))
    if emit == "dvc":
        written, name = write_dvc_stage(spec, output, dvc_file, dvc_stage)
        click.echo(f"wrote stage {name} to {written}: `dvc repro` compiles, trains and verifies it", err=True)
        return
    if emit == "k8s" and (to_stdout or not k8s_pvc):
        raise click.UsageError(
            "--emit k8s writes <plan>.k8s.yaml beside the plan: give -o PLAN (a file) and --k8s-pvc NAME"
        )
    if emit is None and (k8s_pvc or k8s_namespace or k8s_gpus_per_node is not None):
        raise click.UsageError("--k8s-pvc, --k8s-namespace and --k8s-gpus-per-node go with --emit k8s")
    result = compile_spec(spec, plan_dir=Path.cwd() if to_stdout else output.parent, allow_unpinned=allow_unpinned)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    files = result.cache_hits + result.cache_misses
    summary = f"plan {result.plan.plan_id} ({files} input files, {result.cache_hits} unchanged since last hashed)"
    if to_stdout:
        click.echo(result.plan.text(), nl=False)
        click.echo(summary, err=True)
    elif emit == "k8s":
        manifest = write_plan_for_k8s(
            result.plan,
            output,
            pvc=k8s_pvc,
            namespace=k8s_namespace,
            gpus_per_node=k8s_gpus_per_node,
            plan_written=lambda path: click.echo(f"wrote {path}: {summary}", err=True),
            note=lambda line: click.echo(f"note: {line}", err=True),
        )
        click.echo(
            f"wrote {manifest}: `kubectl apply -f {manifest}` once the volume {k8s_pvc} holds the plan's folder",
            err=True,
        )
    else:
        write_plan(result.plan, output)
        click.echo(f"wrote {output}: {summary}", err=True)
