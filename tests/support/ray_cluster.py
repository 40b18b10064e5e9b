"""A real Ray cluster for the tests, on this machine: ``ray start --block`` for a head node and more nodes, each
process the tests' own child, with a token every client must present, stopped by those processes' ids (never
``ray stop``, which stops every Ray node on the machine, other people's included)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .servers import free_ports

__all__ = ["RayCluster", "start_ray_cluster"]


@dataclass
class RayCluster:
    """A running test cluster: the head's ``address`` (127.0.0.1:PORT), the variables a client (a driver) needs in
    its environment to be let in (``client_env``), and the ``ray start --block`` process of each node."""

    address: str
    client_env: dict[str, str]
    temp_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def environ(self) -> dict[str, str]:
        """This process's environment with the cluster's token: for a driver started as a subprocess."""
        return {**os.environ, **self.client_env}

    def processes(self) -> list[int]:
        """The pids of every process of the cluster (the nodes' ``ray start`` and all they started, Ray's workers
        included)."""
        import psutil

        found = []
        for node in self.nodes:
            try:
                parent = psutil.Process(node.pid)
                found += [parent.pid, *(p.pid for p in parent.children(recursive=True))]
            except psutil.NoSuchProcess:
                continue
        return found

    def stop(self, grace_s: float = 20) -> None:
        """Stop the nodes (the last started first): SIGTERM to each ``ray start --block``, which stops what it
        started; whatever of theirs is still alive after ``grace_s`` is killed, by its pid."""
        import psutil

        tree = []
        for pid in self.processes():
            try:
                tree.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        for node in reversed(self.nodes):
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=10)
        for node in self.nodes:
            if node.poll() is None:
                node.wait(timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_ray_cluster(
    root: str | Path, nodes: int = 2, env: dict[str, str] | None = None, resources: dict[str, float] | None = None
) -> RayCluster:
    """A real Ray cluster on this machine: a head node and ``nodes - 1`` more (``ray start --block`` each, one CPU
    and a resource ``ftc_node_K`` each, and ``resources`` on every node; a small object store; no dashboard), with
    token authentication (a fresh random token: Ray's gRPC servers listen on every interface, so the token is what
    keeps others out) and a temp folder of its own. ``env``: the nodes' environment besides this process's (their
    workers see it). Stop it with :meth:`RayCluster.stop`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    # the head's ports, Ray's fixed defaults among them (10001, 8265), chosen free: another cluster may run here
    port, client_port, dashboard_port = free_ports(3)
    ray = str(Path(sys.executable).with_name("ray"))
    client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(24)}
    # a short folder of its own: Ray's unix sockets live under it, and their paths must stay under 108 bytes
    temp_dir = Path(tempfile.mkdtemp(prefix="ftc-ray-cluster-"))
    cluster = RayCluster(f"127.0.0.1:{port}", client_env, temp_dir)
    environment = {**os.environ, **(env or {}), **client_env}
    common = ["--num-cpus", "1", "--object-store-memory", str(100 * 1024 * 1024), "--disable-usage-stats", "--block"]
    try:
        for k in range(nodes):
            where = (
                ["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp_dir)]
                + ["--ray-client-server-port", str(client_port), "--dashboard-port", str(dashboard_port)]
                if k == 0
                else ["--address", cluster.address]
            )
            node_resources = json.dumps({f"ftc_node_{k}": 1, **(resources or {})})
            log = root / f"node{k}.log"
            with open(log, "w") as out:
                cluster.nodes.append(
                    subprocess.Popen(
                        [ray, "start", *where, *common, "--resources", node_resources],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=environment,
                        start_new_session=True,
                    )
                )
            _wait_for_node(cluster.nodes[-1], log, k)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_for_node(proc: subprocess.Popen, log: Path, k: int, timeout_s: float = 180) -> None:
    """Until node ``k``'s ``ray start --block`` says its runtime started (it then blocks, serving)."""
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ray start (node {k}) failed: " + log.read_text(errors="replace")[-2000:])
        time.sleep(0.3)
