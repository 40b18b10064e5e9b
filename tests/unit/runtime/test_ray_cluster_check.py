"""The check of a plan's Ray resources against the cluster's nodes (``ray.nodes()`` as Ray returns it), before a
job is submitted, and the note the local backend prints for a plan that asks for them."""

from __future__ import annotations

import json

import pytest

from ftc.errors import EngineUnavailable, ExitCode
from ftc.runtime.launch.resources import check_cluster

A10G = "accelerator_type:A10G"


def _node(alive: bool = True, **resources: float) -> dict:
    return {"Alive": alive, "Resources": {"node:127.0.0.1": 1.0, **resources}}


TWO = [_node(CPU=1.0, memory=8e9, **{A10G: 1.0}), _node(CPU=1.0, memory=8e9)]


def test_a_cluster_that_holds_the_workers_passes():
    check_cluster(TWO, {"CPU": 1.0, A10G: 0.001}, {}, 1, "h:1")
    check_cluster(TWO, {"CPU": 1.0, "memory": 4e9}, {"memory": 4e9}, 2, "h:1")


def test_a_resource_no_node_offers_is_named_with_the_amount_and_what_the_cluster_has():
    with pytest.raises(EngineUnavailable) as caught:
        check_cluster(TWO, {"CPU": 1.0, "anyscale/accelerator_shape:4xA10G": 0.001}, {}, 2, "h:1")
    text = str(caught.value)
    assert caught.value.exit_code == ExitCode.ENGINE_UNAVAILABLE == 13
    assert "no node that offers anyscale/accelerator_shape:4xA10G 0.001 (each worker)" in text
    assert f"the cluster has: {{CPU: 2, {A10G}: 1, memory: 16000000000}}" in text  # node:... markers left out
    assert "fix: give nodes of the cluster that resource" in text


def test_a_dead_node_offers_nothing():
    with pytest.raises(EngineUnavailable, match=f"no node that offers {A10G} 0.001"):
        check_cluster([_node(False, CPU=1.0, **{A10G: 1.0}), _node(CPU=1.0)], {"CPU": 1.0, A10G: 0.001}, {}, 1, "h")


def test_too_few_places_for_the_workers_is_refused_with_each_nodes_share():
    # the resource is on one node only, so of 2 workers (one CPU each) only one can be placed
    with pytest.raises(EngineUnavailable) as caught:
        check_cluster(TWO, {"CPU": 1.0, A10G: 0.001}, {}, 2, "h:1")
    text = str(caught.value)
    assert f"can hold 1 of the plan's 2 workers, each asking for {{CPU: 1, {A10G}: 0.001}}" in text
    assert f"its nodes have: {{CPU: 1, {A10G}: 1}}; {{CPU: 1}}" in text


def test_fractions_are_counted_as_ray_counts_them():
    # 1000 workers of 0.001 fit exactly in 1 (as Ray's units of 1/10000 count them; floats alone would not)
    check_cluster([_node(**{A10G: 1.0})], {A10G: 0.001}, {}, 1000, "h")
    with pytest.raises(EngineUnavailable, match="can hold 1000 of the plan's 1001 workers"):
        check_cluster([_node(**{A10G: 1.0})], {A10G: 0.001}, {}, 1001, "h")


def test_the_trainer_must_fit_beside_a_worker_on_one_node():
    with pytest.raises(EngineUnavailable) as caught:
        check_cluster(TWO, {"CPU": 1.0, "memory": 5e9}, {"memory": 150_323_855_360}, 1, "h:1")
    text = str(caught.value)
    assert "no node of the Ray cluster at h:1 holds the trainer's {memory: 150323855360}" in text
    with pytest.raises(EngineUnavailable, match=r"no node that offers bigmem 1 \(the trainer\)"):
        check_cluster(TWO, {"CPU": 1.0}, {"bigmem": 1.0}, 1, "h:1")


def test_the_local_backend_says_they_apply_on_ray(job, ftc, tmp_path):
    spec = job(worker_resources={A10G: 0.001}, trainer_resources={"memory": 1e9}, num_epochs=1)
    assert ftc("compile", spec, "-o", tmp_path / "p.json").code == 0
    r = ftc("run", tmp_path / "p.json", "--backend", "local")
    assert r.code == 0, r.err
    note = (
        f"resources: worker_resources {{{A10G}: 0.001}}; trainer_resources {{memory: 1000000000}} apply on Ray"
        " (--backend ray); the local backend runs here and records them"
    )
    assert note in r.out + r.err
    carried = json.loads(next((tmp_path / "output" / "checkpoints").glob("step-*/plan.json")).read_text())["spec"]
    assert carried["worker_resources"] == {A10G: 0.001}  # recorded with every checkpoint
