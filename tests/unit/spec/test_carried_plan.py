"""A plan is checked the same way whether ``ftc compile`` writes it or it is read (from a plan file or a checkpoint):
every check the compiler makes on the spec's fields, output folders that are never a system folder, and a
``deepspeed`` section that is an allow-list. A resealed plan (its plan_id recomputed) the compiler would never write
is refused with exit 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.errors import ExitCode, PlanInvalid, UsageError
from ftc.spec.plan import Placement, read_plan
from ftc.spec.plan_checks import deepspeed_problems
from ftc.spec.plan_format import seal_plan

from conftest import read_json


@pytest.fixture
def compiled(job, ftc, tmp_path):
    """A real compiled plan: ``compiled(**spec)`` -> its JSON document (the plan is in tmp_path/plan.json)."""

    def make(**overrides):
        r = ftc("compile", job(**overrides), "-o", tmp_path / "plan.json")
        assert r.code == 0, r.err
        return read_json(tmp_path / "plan.json")

    return make


def _resealed(tmp_path: Path, plan: dict) -> Path:
    path = tmp_path / "resealed.json"
    path.write_text(json.dumps(seal_plan(plan)))
    return path


def _refused(ftc, path: Path) -> str:
    r = ftc("plan", "show", path)
    assert r.code == ExitCode.PLAN_INVALID, r.err
    assert "Traceback" not in r.err
    assert "$.plan_id" not in r.err  # resealed: only the content is wrong
    return r.err


# -- output_dir: never /, ~, a system folder, or a climb into the spec's parents ----------------------------------


@pytest.mark.parametrize(
    "output_dir, message",
    [
        ("/", "/ is the root folder"),
        ("~", "is the home folder"),
        ("/etc", "/etc is a system folder"),
        ("/etc/ftc-run", "/etc/ftc-run is inside /etc"),
        ("/usr/local/runs", "inside /usr"),
        ("/proc/self", "inside /proc"),
        ("/var", "/var is a system folder"),
        ("/var/lib/runs", "inside /var/lib"),
        ("/root", "/root is "),
        ("/etc/../etc", "/etc is a system folder"),  # normalized first
        ("../../../../../..", "climbs out of the spec's folder into one of its parents"),
        ("..", "climbs out of the spec's folder into one of its parents"),
        ("runs/../../..", "climbs out of the spec's folder into one of its parents"),
    ],
)
def test_an_output_dir_that_is_not_a_folder_of_its_own_is_a_spec_error(job, ftc, output_dir, message):
    r = ftc("compile", job(output_dir=output_dir))
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.output_dir: " in r.err and message in r.err
    assert "fix: name a folder for the run's own files, e.g. runs/NAME" in r.err


def test_a_relative_output_dir_that_reaches_a_system_folder_is_refused(job, ftc, tmp_path):
    climb = "../" * (len(tmp_path.parts) + 2) + "etc"  # more levels than there are: still /etc
    r = ftc("compile", job(output_dir=climb))
    assert r.code == ExitCode.SPEC_INVALID
    assert "/etc is a system folder" in r.err


def test_a_link_to_a_system_folder_is_refused_as_that_folder(job, ftc, tmp_path):
    (tmp_path / "innocent").symlink_to("/etc")
    r = ftc("compile", job(output_dir="innocent"))
    assert r.code == ExitCode.SPEC_INVALID
    assert "/etc is a system folder" in r.err


@pytest.mark.parametrize("output_dir", ["out", "../runs/x", "../../runs/quickstart", "~/runs/x", "/tmp/x/y"])
def test_output_dirs_of_their_own_compile(job, ftc, tmp_path, output_dir):
    r = ftc("compile", job(output_dir=output_dir), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err


def test_the_examples_output_dirs_are_folders_of_their_own():
    from ftc.spec.folders import system_folder

    root = Path(__file__).resolve().parents[3]
    for spec in sorted((root / "examples").glob("*/*.yaml")):
        for line in spec.read_text().splitlines():
            if line.startswith("output_dir:"):
                out = line.split(":", 1)[1].strip()
                assert system_folder((spec.parent / out).resolve()) is None, spec


# -- a resealed plan the compiler would never write -----------------------------------------------------------------


def test_a_resealed_plan_with_an_absolute_tensorboard_log_dir_is_refused(compiled, ftc, tmp_path):
    plan = compiled()
    plan["spec"]["logger"] = {"provider": "tensorboard", "provider_config": {"log_dir": "/tmp/elsewhere"},
                              "if_unreachable": "fail"}  # fmt: skip
    err = _refused(ftc, _resealed(tmp_path, plan))
    assert "$.spec.logger.provider_config.log_dir: the event files go inside the output folder" in err
    assert "fix: give a folder relative to output_dir" in err


@pytest.mark.parametrize("log_dir", ["../../x", "a/../../b", "~/tb"])
def test_a_resealed_plan_whose_log_dir_climbs_out_is_refused(compiled, ftc, tmp_path, log_dir):
    plan = compiled()
    plan["spec"]["logger"] = {"provider": "tensorboard", "provider_config": {"log_dir": log_dir},
                              "if_unreachable": "fail"}  # fmt: skip
    assert "the event files go inside the output folder" in _refused(ftc, _resealed(tmp_path, plan))


def test_a_resealed_plan_with_a_credential_in_its_tracking_uri_is_refused(compiled, ftc, tmp_path):
    plan = compiled()
    plan["spec"]["logger"] = {"provider": "mlflow", "if_unreachable": "fail",
                              "provider_config": {"tracking_uri": "http://user:SECRET@127.0.0.1:9"}}  # fmt: skip
    err = _refused(ftc, _resealed(tmp_path, plan))
    assert "the tracking URI holds credentials" in err and "SECRET" not in err


@pytest.mark.parametrize("output", ["/", "/etc", "~", "/usr/lib/x"])
def test_a_resealed_plan_whose_output_is_a_system_folder_is_refused(compiled, ftc, tmp_path, output):
    plan = compiled()
    plan["output"]["dir"] = output
    assert "$.output.dir: " in _refused(ftc, _resealed(tmp_path, plan))


def test_a_resealed_plan_with_a_cross_field_error_the_compiler_refuses_is_refused(compiled, ftc, tmp_path):
    plan = compiled()
    plan["spec"]["num_nodes"], plan["spec"]["num_devices"] = 2, 3
    assert "3 devices cannot be split evenly over 2 nodes" in _refused(ftc, _resealed(tmp_path, plan))


@pytest.mark.parametrize(
    ("rope", "unfilled"),
    [
        ({"rope_type": "linear", "factor": None, "original_max_position_embeddings": None}, "factor"),
        ({"rope_type": "linear"}, "original_max_position_embeddings"),
        ({"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64}, "low_freq_factor"),
    ],
)
def test_a_resealed_plan_with_a_rope_scaling_left_open_is_refused(compiled, ftc, tmp_path, rope, unfilled):
    """A spec may leave the factor and lengths to the compiler; a plan that does was not compiled, and the run,
    plan show and export would read the holes."""
    plan = compiled()
    plan["spec"]["rope_scaling"] = rope
    err = _refused(ftc, _resealed(tmp_path, plan))
    assert f"$.spec.rope_scaling.{unfilled}: not filled in (ftc compile writes every value)" in err


def test_a_compiled_plan_passes_the_same_check_it_is_read_with(compiled, tmp_path):
    compiled(deepspeed={"zero_stage": 3, "offload_param": True, "offload_optimizer": True}, num_devices=2)
    plan = read_plan(tmp_path / "plan.json")
    assert plan.deepspeed["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}


# -- the deepspeed section is an allow-list -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section, found",
    [
        ({"flops_profiler": {"enabled": True, "output_file": "/tmp/victim"}}, "'flops_profiler' was unexpected"),
        ({"csv_monitor": {"enabled": True, "output_path": "/tmp/elsewhere"}}, "'csv_monitor' was unexpected"),
        ({"tensorboard": {"enabled": True, "output_path": "/tmp/tb"}}, "'tensorboard' was unexpected"),
        ({"wandb": {"enabled": True, "project": "x"}}, "'wandb' was unexpected"),
        ({"comet": {"enabled": True}}, "'comet' was unexpected"),
        ({"aio": {"block_size": 1048576}}, "'aio' was unexpected"),
        ({"checkpoint": {"load_universal": True}}, "'checkpoint' was unexpected"),
        ({"autotuning": {"enabled": True, "results_dir": "/tmp/at"}}, "'autotuning' was unexpected"),
        ({"comms_logger": {"enabled": True}}, "'comms_logger' was unexpected"),
    ],
)
def test_a_resealed_plan_with_a_deepspeed_monitor_or_path_is_refused(compiled, ftc, tmp_path, section, found):
    plan = compiled()
    plan["deepspeed"].update(section)
    err = _refused(ftc, _resealed(tmp_path, plan))
    assert f"$.deepspeed: Additional properties are not allowed ({found})" in err
    assert "no monitor, profiler or file path" in err


def test_an_nvme_offload_path_under_an_allowed_key_is_refused(compiled, ftc, tmp_path):
    # new: an allowed section (zero_optimization.offload_optimizer) with a path nested inside it
    plan = compiled()
    plan["deepspeed"]["zero_optimization"]["offload_optimizer"] = {"device": "nvme", "nvme_path": "/tmp/victim"}
    err = _refused(ftc, _resealed(tmp_path, plan))
    assert "$.deepspeed.zero_optimization.offload_optimizer: Additional properties" in err
    assert "'nvme' is not one of ['cpu', 'none']" in err


def test_a_monitor_nested_under_an_allowed_section_is_refused():
    # new: allowed top-level keys are objects with their own allow-lists, not "any object below here"
    found = deepspeed_problems({"bf16": {"enabled": True, "csv_monitor": {"output_path": "/x"}}})
    assert found == ["$.bf16: Additional properties are not allowed ('csv_monitor' was unexpected)"]


def test_a_lookalike_key_is_not_an_allowed_one():
    # new: Cyrillic 'е' in "zero_optimization", a trailing space, a different case: none is the key ftc sets
    for key in ("z\u0435ro_optimization", "zero_optimization ", "Zero_Optimization", "zero_optimization\u200b"):
        assert deepspeed_problems({key: {"stage": 0}}) != [], key


def test_a_string_where_ftc_writes_a_number_is_refused():
    # new: an allowed key whose value is a path instead of a number or a switch
    assert deepspeed_problems({"steps_per_print": "/tmp/x"}) != []
    assert deepspeed_problems({"zero_optimization": {"stage": 2, "reduce_bucket_size": "/tmp/x"}}) != []
    assert deepspeed_problems({"wall_clock_breakdown": "yes"}) != []


def test_a_deepspeed_file_with_a_profiler_is_a_spec_error_at_compile(job, ftc, tmp_path):
    (tmp_path / "ds.json").write_text(
        json.dumps({"zero_optimization": {"stage": 1}, "flops_profiler": {"enabled": True, "output_file": "/x"}})
    )
    r = ftc("compile", job(deepspeed={"config_path": "ds.json"}), "-o", tmp_path / "p.json")
    assert r.code == ExitCode.SPEC_INVALID, r.err
    assert "$.deepspeed.config_path: the DeepSpeed config: Additional properties are not allowed " in r.err
    assert "('flops_profiler' was unexpected)" in r.err and "fix: remove it from the file" in r.err
    assert not (tmp_path / "p.json").exists()


def test_a_deepspeed_file_with_zero_tuning_numbers_compiles(job, ftc, tmp_path):
    ds = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
          "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                                "reduce_bucket_size": 500000000, "stage3_prefetch_bucket_size": 100000,
                                "stage3_param_persistence_threshold": 10000, "sub_group_size": 1000000000,
                                "offload_optimizer": {"device": "cpu", "pin_memory": True}}}  # fmt: skip
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    r = ftc("compile", job(deepspeed={"config_path": "ds.json"}), "-o", tmp_path / "p.json")
    assert r.code == 0, r.err
    assert read_plan(tmp_path / "p.json").zero_stage == 3


# -- a placed plan (ftc reproduce) feeds no tracker the plan names --------------------------------------------------


def test_a_placed_plan_feeds_only_the_tracker_its_placement_names(compiled, tmp_path):
    import dataclasses

    compiled(logger={"provider": "mlflow", "provider_config": {"tracking_uri": "http://127.0.0.1:9"}})
    plan = read_plan(tmp_path / "plan.json")
    assert plan.logger.provider == "mlflow"  # the user's own compiled plan: its logger
    placed = dataclasses.replace(plan, placement=Placement({}))
    assert placed.logger.provider == "mlflow"  # placed by a backend (Ray: absolute paths): still the user's plan
    off = dataclasses.replace(plan, placement=Placement({}, tracker="off"))
    assert off.logger is None  # ftc reproduce: off unless named
    named = dataclasses.replace(plan, placement=Placement({}, tracker="tensorboard"))
    assert named.logger.provider == "tensorboard" and named.logger.provider_config == {}
    assert named.text() == plan.text()  # the plan's bytes (and plan_id) are the same


def test_a_placement_with_an_unknown_tracker_is_refused():
    with pytest.raises(ValueError, match="tracker"):
        Placement.from_dict({"locations": {}, "tracker": "http://127.0.0.1:9"})
    assert Placement.from_dict(Placement({"a": "/x"}, 3, "/c", "wandb").to_dict()).tracker == "wandb"
    assert Placement.from_dict({"locations": {}}).tracker is None  # the plan's own logger


# -- the container backend never binds a system folder --------------------------------------------------------------


@pytest.mark.parametrize("output", ["/", "/etc", "~", "/usr/share/runs"])
def test_a_container_never_gets_a_system_folder_to_write(tmp_path, monkeypatch, output):
    from ftc.runtime.launch.docker import container_mounts

    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "job").mkdir()
    with pytest.raises(UsageError, match="a container run binds its output and ftc's cache read-write"):
        container_mounts(tmp_path / "job" / "plan.json", {}, Path(output).expanduser(), ())
    assert not (tmp_path / "cache").exists()  # refused before any folder was made


def test_a_container_never_gets_a_system_folder_as_a_cache(tmp_path, monkeypatch):
    from ftc.runtime.launch.docker import container_mounts

    monkeypatch.setenv("FTC_CACHE_DIR", "/etc")
    (tmp_path / "job").mkdir()
    with pytest.raises(UsageError, match="/etc: /etc is a system folder"):
        container_mounts(tmp_path / "job" / "plan.json", {}, tmp_path / "out", ())


def test_a_plan_input_in_a_system_folder_is_not_bound_over_the_images_own(tmp_path, monkeypatch):
    from ftc.runtime.launch.docker import container_mounts

    monkeypatch.setenv("FTC_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "job").mkdir()
    with pytest.raises(UsageError, match="/etc: a system folder; bound into the container it would cover"):
        container_mounts(tmp_path / "job" / "plan.json", {"train": Path("/etc")}, tmp_path / "out", ())


def test_reading_a_resealed_plan_raises_plan_invalid(compiled, tmp_path):
    plan = compiled()
    plan["deepspeed"]["flops_profiler"] = {"enabled": True, "output_file": str(tmp_path / "victim")}
    with pytest.raises(PlanInvalid, match="flops_profiler"):
        read_plan(_resealed(tmp_path, plan))


def test_a_placed_plan_whose_output_is_a_store_publishes_nothing(compiled, tmp_path):
    # new: a checkpoint's plan naming a bucket (someone else's, or one the environment's credentials reach) as its
    # output: the rerun writes into -o, and uploads nowhere
    import dataclasses

    from ftc.spec.plan import Plan

    plan = compiled()
    plan["output"]["dir"] = "s3://their-bucket/runs/x/"
    read = Plan.from_dict(seal_plan(plan), folder=tmp_path)
    assert read.output_store == "s3://their-bucket/runs/x/"
    placed = dataclasses.replace(read, placement=Placement({read.output_dir: str(tmp_path / "rerun")}))
    assert placed.output_store is None and placed.output_path == tmp_path / "rerun"


def test_the_ray_backends_placement_keeps_the_users_own_tracker(compiled, tmp_path):
    # the Ray backend places every plan (absolute paths for its nodes): a plan the user compiled keeps its logger
    import dataclasses

    from ftc.runtime.launch.ray import absolute_placement

    compiled(logger={"provider": "tensorboard", "provider_config": {}})
    plan = read_plan(tmp_path / "plan.json")
    placed = dataclasses.replace(plan, placement=Placement.from_dict(absolute_placement(plan).to_dict()))
    assert placed.logger == plan.spec.logger
