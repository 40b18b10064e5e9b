"""What a launcher tells the processes it starts (``ftc.runtime.launch.handoff``): one table of options, turned into
a worker's command line and read back by the worker's parser and by ``ftc run``'s (click), the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ftc.runtime.launch.handoff import Handoff, Rendezvous, rendezvous_options, worker_parser


def test_a_workers_options_read_back_as_the_launcher_wrote_them(tmp_path):
    rendezvous = Rendezvous(node_rank=1, master_addr="10.0.0.1", master_port=29501)
    handoff = Handoff(
        resume=True,
        placement=tmp_path / "placement.json",
        outcome=tmp_path / "outcome.json",
        inputs_checked=True,
        tracker_off=True,
        container="ftc-0123456789ab-node1",
    )
    args = worker_parser().parse_args(["plan.json", *rendezvous.to_args(), *handoff.to_args()])
    assert args.plan == Path("plan.json")
    assert Rendezvous.from_args(args) == rendezvous and Handoff.from_args(args) == handoff


def test_the_defaults_need_no_options():
    assert Handoff().to_args() == []
    args = worker_parser().parse_args(["plan.json"])
    assert Rendezvous.from_args(args) == Rendezvous() and Handoff.from_args(args) == Handoff()


def test_the_worker_refuses_a_rank_or_port_out_of_range(capsys):
    for bad in (["--node-rank", "-1"], ["--master-port", "0"], ["--master-port", "65536"]):
        with pytest.raises(SystemExit):
            worker_parser().parse_args(["plan.json", *bad])
        assert "is not in the range" in capsys.readouterr().err


def test_ftc_runs_click_options_come_from_the_same_table():
    seen = []

    @click.command()
    @rendezvous_options
    def command(rendezvous: Rendezvous) -> None:
        seen.append(rendezvous)

    runner = CliRunner()
    assert (
        runner.invoke(command, ["--node-rank", "2", "--master-addr", "node0", "--master-port", "1234"]).exit_code == 0
    )
    assert runner.invoke(command, []).exit_code == 0
    assert seen == [Rendezvous(2, "node0", 1234), Rendezvous()]
    refused = runner.invoke(command, ["--master-port", "0"])
    assert refused.exit_code == 2 and "1<=x<=65535" in refused.output
    shown = " ".join(runner.invoke(command, ["--help"]).output.split())
    assert "This machine's rank in a multi-node plan." in shown and "[default: 29500; 1<=x<=65535]" in shown


def test_the_launch_layer_loads_no_launcher_for_the_rendezvous_options():
    code = (
        "import sys\nfrom ftc.runtime.launch import Rendezvous, rendezvous_options\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('ftc.runtime.launch')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(loaded) == ["ftc.runtime.launch", "ftc.runtime.launch.handoff"]
