"""Inputs tracked by DVC (``{dvc: {path, repo, rev, remote}}``), pinned by git commit and DVC md5.

DVC itself (``DVCFileSystem``) says what the path is at that rev without downloading any data: the md5 of the
file (or of the folder's ``.dir`` listing), and the remote the repository configures at that rev. The bytes are in
that remote, content-addressed (``files/md5/ab/cdef...``); ftc reads them with its own stores (a local folder,
s3://, gs://), checks each against its md5, and keeps them in the content cache. So the runtime needs neither DVC
nor git, and a plan compiled here runs on a machine that has only the remote.

Compiling reads what the checks need: a data file whole, and of a folder its listing and small JSON files; every
other object of a folder is looked up (size, presence) so that data never pushed fails now, not at run time.
"""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ftc.spec.canonical import digest_of
from ftc.spec.model import DvcLocation, DvcRef, Location
from ftc.spec.plan import PlanFile, PlanInput
from ftc.spec.reading import finite_json
from ftc.spec.text import redact
from ftc.stores.content_cache import ContentCache, DigestMismatch
from ftc.stores.dvc_remote import DvcRemote
from ftc.stores.hashing import name_problem
from ftc.stores.remote import RemoteProblem, Store

from .base import InputNotFound, ResolveContext, ResolvedInput, SourceKind, refuse_credential

__all__ = ["Dvc"]

_SMALL = 1 << 20  # JSON members of a folder up to this size are fetched for the checks


class Dvc(SourceKind):
    """``{dvc: {path, repo, rev, remote}}``: pinned by git commit and md5, read from the remote's objects by md5."""

    name = "dvc"
    fetched = True

    def takes(self, location: Location) -> bool:
        return isinstance(location, DvcLocation)

    def resolve(self, location: Location, ctx: ResolveContext) -> ResolvedInput:
        return resolve(location.dvc, ctx)

    def objects(self, item: PlanInput) -> list[tuple[Any, dict[str, str], dict[str, str | None]]]:
        # the remote's objects are named by their md5: the bytes are checked against it (a data file's against its
        # sha256 too), and nothing else can have changed
        pin = dict(item.pin or {})
        remote = DvcRemote(pin["remote"], pin.get("endpoint"))
        if item.kind == "file":
            obj = remote.object(pin["md5"], item.uri.rsplit("@", 1)[0].rsplit("/", 1)[-1], size=item.size)
            return [(obj, remote.cache_key(pin["md5"]), {"sha256": item.digest[7:], "md5": pin["md5"]})]
        objects = []
        for f in item.files:
            md5 = f.pin["md5"]
            objects.append((remote.object(md5, f.path, size=f.size), remote.cache_key(md5), {"md5": md5}))
        return objects

    def store(self, item: PlanInput) -> Store:
        return DvcRemote(item.pin["remote"], item.pin.get("endpoint")).store

    def endpoint(self, item: PlanInput) -> str | None:
        return (item.pin or {}).get("endpoint")

    def cluster_problem(self, role: str, item: PlanInput) -> str | None:
        store = (item.pin or {}).get("remote", "")
        if store.startswith(("s3://", "gs://")):
            return None
        return (
            f"{role}: its DVC remote {store} is a folder on this machine, which the cluster cannot reach"
            "\n    fix: push the data to an s3:// or gs:// DVC remote"
        )

    def pin_text(self, item: PlanInput) -> str:
        return f"md5 {item.pin['md5'][:12]}… (each file by md5)"

    def namespace(self, source: dict[str, Any]) -> str:
        return f"dvc:{source.get('pin', {}).get('repo', '')}"


def resolve(ref: DvcRef, ctx: ResolveContext) -> ResolvedInput:
    try:
        from dvc.api import DVCFileSystem
    except ImportError:
        raise InputNotFound(
            "inputs tracked by DVC need the dvc package to compile", "pip install 'ftc[dvc]'", "unconfigured"
        ) from None
    repo, repo_in_plan = _repo(ref, ctx)
    rev = ref.rev or "HEAD"
    fs = _open(DVCFileSystem, repo, rev, repo_in_plan)
    commit = fs.repo.scm.resolve_rev(rev)
    md5, hash_name = _tracked_md5(fs, ref.path, rev, commit)
    if hash_name != "md5":
        raise InputNotFound(
            f"{ref.path} at {rev} is hashed the DVC 2 way ({hash_name})",
            "run `dvc cache migrate --dvc-files` in the repository and commit",
            "unconfigured",
        )
    if ref.rev is None and os.path.isdir(repo):
        _check_committed(DVCFileSystem, repo, ref.path, md5)
    remote = DvcRemote(*_remote(fs, ref, rev, repo_in_plan, ctx))
    pin: dict[str, Any] = {"repo": repo_in_plan, "rev": rev, "commit": commit, "md5": md5, "remote": remote.url}
    if remote.endpoint:
        pin["endpoint"] = remote.endpoint
    uri = f"{ref.path}@{commit[:12]}"
    try:
        if md5.endswith(".dir"):
            return _folder(remote, ref, md5, pin, uri)
        return _file(remote, ref, md5, pin, uri)
    except RemoteProblem as exc:
        raise InputNotFound(str(exc), exc.hint, exc.reason) from None


def _repo(ref: DvcRef, ctx: ResolveContext) -> tuple[str, str]:
    """Where the repository is for DVC, and how the plan names it (a URL as given; a local path relative to the
    plan's folder, like any local input)."""
    if ref.repo and "://" in ref.repo or (ref.repo or "").startswith("git@"):
        parts = urlsplit(ref.repo)
        if redact(ref.repo) != ref.repo or parts.password or (parts.username and parts.scheme in ("http", "https")):
            raise InputNotFound(
                "the repo URL holds a credential, which would be written into the plan",
                "remove it from the URL; let git's credential helper supply it",
                "spec",
            )
        return ref.repo, ref.repo
    if ref.repo:
        path = ctx.spec_path(ref.repo)
        if not path.is_dir():
            raise InputNotFound(
                f"no such repository folder: {path}", "check dvc.repo; a relative path is relative to the spec file"
            )
    else:
        path = ctx.base_dir
    try:
        top = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        where = "the spec's folder" if not ref.repo else str(path)
        raise InputNotFound(
            f"{where} is not in a git repository", "give dvc.repo: the repository that tracks the path"
        ) from None
    return top, ctx.plan_location(ref.repo or ".", Path(top))


def _open(DVCFileSystem, repo: str, rev: str, name: str):
    from dvc.exceptions import DvcException
    from dvc.scm import CloneError, RevError

    try:
        fs = DVCFileSystem(repo, rev=rev)
        fs.repo  # noqa: B018 - opening the repository at rev is what can fail
        return fs
    except RevError:
        raise InputNotFound(
            f"{name}: no revision {rev!r}", "check the tag, branch or commit (`git tag`, `git branch -a`)"
        ) from None
    except CloneError:
        raise InputNotFound(
            f"{name}: cannot clone the repository", "check the URL, the network and git's credentials", "unreachable"
        ) from None
    except (DvcException, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputNotFound(f"{name}: cannot open the repository at {rev} ({text})") from None


def _tracked_md5(fs, path: str, rev: str, commit: str) -> tuple[str, str]:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise InputNotFound(
            f"{path}: no such path at {rev} ({commit[:12]})",
            "check dvc.path (relative to the repository root) and dvc.rev",
        ) from None
    dvc_info = info.get("dvc_info") or {}
    if not dvc_info.get("md5"):
        raise InputNotFound(
            f"{path} is not tracked by DVC at {rev} ({commit[:12]})",
            f"`dvc add {path}` and commit the .dvc file, or give it as a plain path",
        )
    entry = dvc_info.get("entry")
    hash_name = entry.hash_info.name if entry is not None and entry.hash_info is not None else "md5"
    return dvc_info["md5"], hash_name


def _check_committed(DVCFileSystem, repo: str, path: str, md5: str) -> None:
    """With no rev the plan pins HEAD: a .dvc file changed since then would silently train on the old data."""
    try:
        now = (DVCFileSystem(repo).info(path).get("dvc_info") or {}).get("md5")
    except FileNotFoundError:
        now = None
    if now != md5:
        raise InputNotFound(
            f"{path}: its .dvc file has changes not committed to git (HEAD pins md5 {md5}, the work tree {now})",
            "commit the .dvc file (and `dvc push`), or set dvc.rev",
            "spec",
        )


def _remote(fs, ref: DvcRef, rev: str, name: str, ctx: ResolveContext) -> tuple[str, str | None]:
    """The remote's URL (and S3 endpoint) the repository configures at ``rev``, unless the spec names one."""
    if ref.remote:
        if "://" in ref.remote:
            refuse_credential(ref.remote, "dvc.remote", "remove it; store credentials come from the environment")
            return ref.remote, None
        return str(ctx.spec_path(ref.remote).resolve()), None  # a folder: relative to the spec, like every local path
    config = fs.repo.config
    default = config["core"].get("remote")
    if not default or default not in config["remote"]:
        raise InputNotFound(
            f"{name} configures no default DVC remote at {rev}",
            "`dvc remote add -d NAME URL` and commit .dvc/config, or give dvc.remote in the spec",
            "unconfigured",
        )
    settings = config["remote"][default]
    url, endpoint = settings["url"], settings.get("endpointurl")
    # neither may reach the plan: it is copied into every checkpoint's record and uploaded with it
    for key, value in (("url", url), ("endpointurl", endpoint)):
        if isinstance(value, str) and redact(value) != value:
            raise InputNotFound(
                f"the DVC remote {default!r} at {rev} has a credential in its {key} ({redact(value)}), which would"
                " be written into the plan and every checkpoint's record",
                f"remove it (`dvc remote modify {default} {key} URL`) and give the store's credentials in the"
                " environment (AWS_*/GOOGLE_* variables), or `dvc remote modify --local` for DVC's own use",
                "unconfigured",
            )
    return url, endpoint


def _fetch(remote: DvcRemote, md5: str, what: str, cache: ContentCache) -> tuple[Path, str]:
    obj = remote.object(md5, what)
    try:
        return cache.fetch(
            remote.cache_key(md5), remote.store.opener(obj), size=obj.size, expected_md5=md5.removesuffix(".dir")
        )
    except DigestMismatch as exc:
        raise RemoteProblem(
            f"{obj.uri}: the remote's object for {what} is corrupt ({exc})",
            "push it again from a good copy: `dvc push --force`",
        ) from None


#: the largest .dir listing read (a million files' entries are about 100 MiB)
_LISTING_LIMIT = 256 << 20


def _listing_entries(listing: Path, what: str) -> list[dict[str, str]]:
    """The entries of a DVC ``.dir`` listing: [{"relpath": ..., "md5": ...}, ...], checked before anything uses them."""
    broken = InputNotFound(
        f"{what}: its DVC .dir listing is not one (a JSON list of relpath and md5 entries, at most 256 MiB)",
        "re-add the folder with `dvc add` from a clean copy, and push it again",
        "spec",
    )
    if listing.stat().st_size > _LISTING_LIMIT:
        raise broken
    try:
        entries = finite_json(listing.read_bytes())
    except (ValueError, RecursionError):
        raise broken from None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("relpath"), str)
        and isinstance(e.get("md5"), str)
        and re.fullmatch(r"[0-9a-f]{32}", e["md5"])
        for e in entries
    ):
        raise broken
    return entries


def _file(remote: DvcRemote, ref: DvcRef, md5: str, pin: dict[str, Any], uri: str) -> ResolvedInput:
    path, sha = _fetch(remote, md5, ref.path, ContentCache())
    size = path.stat().st_size
    entry = PlanInput("dvc", uri, pinned=True, kind="file", digest="sha256:" + sha, size=size, pin=pin)
    return ResolvedInput(entry, local_path=path)


def _folder(remote: DvcRemote, ref: DvcRef, md5: str, pin: dict[str, Any], uri: str) -> ResolvedInput:
    cache = ContentCache()
    listing, _ = _fetch(remote, md5, f"{ref.path} (its .dir listing)", cache)
    entries = sorted(_listing_entries(listing, ref.path), key=lambda e: e["relpath"])
    for entry in entries:
        parts = entry["relpath"].split("/")
        if entry["relpath"].startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InputNotFound(
                f"{ref.path}: its DVC listing names {entry['relpath']!r}, a path outside the folder",
                "re-add the folder with `dvc add` from a clean copy",
                "spec",
            )
        problem = name_problem(entry["relpath"])
        if problem is not None:
            raise InputNotFound(
                f"{ref.path} (its DVC listing): {problem}", "then `dvc add` the folder again and push it"
            )
    with ThreadPoolExecutor(max_workers=8) as pool:  # is every object in the remote, and how large
        objects = list(pool.map(lambda e: remote.object(e["md5"], f"{ref.path}/{e['relpath']}"), entries))
    small = {}
    for entry, obj in zip(entries, objects):
        if entry["relpath"].endswith(".json") and obj.size <= _SMALL:
            small[entry["relpath"]] = _fetch(remote, entry["md5"], entry["relpath"], cache)[1]
    files = tuple(PlanFile(e["relpath"], o.size, pin={"md5": e["md5"]}) for e, o in zip(entries, objects))
    view = cache.view("partial-" + digest_of([pin, [f.to_dict() for f in files]])[7:], small)
    entry = PlanInput("dvc", uri, pinned=True, kind="dir", size=sum(o.size for o in objects), pin=pin, files=files)
    return ResolvedInput(entry, local_path=view)
