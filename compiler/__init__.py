"""The compiler: job spec -> pinned, deterministic run plan (and views of plans: ``plan show``/``diff``, k8s)."""

from ._compile import CheckedSpec, CompileResult, build_plan, check_inputs, compile_spec, resolve_inputs, write_plan
from ._dvc import write_dvc_stage
from ._k8s import k8s_manifest, write_k8s_manifest
from ._plan_files import read_or_compile_plan, write_plan_for_k8s
from ._view import describe_plan, diff_plans

__all__ = [
    "CheckedSpec",
    "CompileResult",
    "build_plan",
    "check_inputs",
    "compile_spec",
    "describe_plan",
    "diff_plans",
    "k8s_manifest",
    "read_or_compile_plan",
    "resolve_inputs",
    "write_dvc_stage",
    "write_k8s_manifest",
    "write_plan",
    "write_plan_for_k8s",
]
