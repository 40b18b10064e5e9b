"""``ftc lineage show|verify|sign|diff|export``: where a checkpoint came from, checked, signed, compared, exported."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._notes import note


@click.group("lineage")
def lineage_group() -> None:
    """Show, verify and export where a checkpoint came from (its lineage.json)."""


@lineage_group.command("show")
@click.argument("checkpoint")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "mermaid", "dot"]), default="text", show_default=True
)
@click.option("--paths", is_flag=True, help="Also say where each parent is on this machine.")
def lineage_show(checkpoint: str, fmt: str, paths: bool) -> None:
    """The chain from CHECKPOINT up to its roots. CHECKPOINT: a checkpoint folder, a run's output folder (its best,
    else latest), a checkpoint a run published (s3://…/checkpoints/step-N/, gs://…), or a published run's prefix
    (s3://bucket/run/: its best pointer, else latest; or s3://bucket/run/best, …/latest), fetched and checked against
    its marker first."""
    from ftc.lineage import load, local_checkpoint
    from ftc.lineage.show import render
    from ftc.lineage.signature_check import SIGNATURE_FILE, signature_note

    with local_checkpoint(checkpoint, say=note) as found:
        record = load(found.folder)
        click.echo(render(record, fmt, folder=found.folder if paths else None))
        signature = found.folder / SIGNATURE_FILE
        if fmt == "text" and (signature.exists() or signature.is_symlink()):  # FTC_TRUSTED_KEYS; files as recorded
            click.echo(f"signature: {signature_note(signature.parent, record)}")


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
    """Re-hash CHECKPOINT's files and every reachable parent's, and recompute every record_id. CHECKPOINT: a folder
    (a run's output folder: its best, else latest), a checkpoint a run published (s3://…/checkpoints/step-N/,
    gs://…), or a published run's prefix (s3://bucket/run/: its best pointer, else latest; or …/best, …/latest),
    downloaded and checked against its marker first. Then say of each checkpoint of the chain: signed by a key
    (trusted or not), unsigned but consistent, or broken (docs/security.md)."""
    from ftc.lineage import load_trusted_keys, trusted_keys_from_env, verify
    from ftc.lineage.signature_check import signature_lines
    from ftc.spec.text import for_terminal

    keys = load_trusted_keys(trusted) + trusted_keys_from_env()  # a key that cannot be read: before any hashing
    signatures: list = []
    record, count, rehashed, unreached = verify(checkpoint, trusted_keys=keys, signatures=signatures, say=note)
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
@click.argument("checkpoint")
def lineage_sign(checkpoint: str) -> None:
    """Sign CHECKPOINT (a checkpoint, an export, or a run's output folder) with the key FTC_SIGNING_KEY names, once
    its files verify: for checkpoints written where no key was (the docker backend). Writes CHECKPOINT/model.sig."""
    from ftc.lineage import sign
    from ftc.spec.text import for_terminal

    folder, by = sign(checkpoint)  # a folder on this machine: a checkpoint in a store is refused, never written
    click.echo(for_terminal(f"signed {folder} with {by}: {folder / 'model.sig'}"))


@lineage_group.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def lineage_diff(a: str, b: str, fmt: str) -> None:
    """Why checkpoints A and B differ: inputs (by pin), settings (key by key), environment (package by package),
    topology and results, as their lineage records and plans say. A and B: as for `ftc lineage show` (folders, run
    folders, or in a store)."""
    from ftc.lineage import local_checkpoint
    from ftc.lineage.diff import diff_checkpoints

    with local_checkpoint(a, say=note) as found_a, local_checkpoint(b, say=note) as found_b:
        found = diff_checkpoints(found_a.path, found_b.path)
    if found_a.digests is not None or found_b.digests is not None:  # named as given, not by the fetched copy
        found.a, found.b = found_a.shown, found_b.shown
    click.echo(json.dumps(found.to_dict(), indent=2) if fmt == "json" else found.text())


@lineage_group.command("export")
@click.argument("checkpoint")
@click.option("--format", "fmt", type=click.Choice(["openlineage", "cyclonedx", "model-card"]), required=True)
def lineage_export(checkpoint: str, fmt: str) -> None:
    """CHECKPOINT's lineage as an OpenLineage run event, a CycloneDX 1.6 ML-BOM, or a Hugging Face model card.
    CHECKPOINT: as for `ftc lineage show` (a folder, a run folder, or in a store)."""
    from datetime import datetime, timezone

    from ftc.lineage import LINEAGE_FILE, load, local_checkpoint
    from ftc.lineage.export import export

    with local_checkpoint(checkpoint, say=note) as found:
        # when the checkpoint was completed (of a fetched copy: when it was fetched; a marker records no time)
        written = (found.folder / LINEAGE_FILE).stat().st_mtime
        record = load(found.folder)
    click.echo(export(record, fmt, datetime.fromtimestamp(written, timezone.utc).isoformat().replace("+00:00", "Z")))
