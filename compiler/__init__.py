"""The compiler: job spec -> pinned, deterministic run plan."""

from ._compile import CheckedSpec, CompileResult, build_plan, check_inputs, compile_spec, resolve_inputs
from ftc._hashing import StatCache, cache_dir
from ._view import describe_plan, diff_plans
from ._k8s import k8s_manifest, write_k8s_manifest

__all__ = [
    "CheckedSpec",
    "CompileResult",
    "StatCache",
    "build_plan",
    "cache_dir",
    "check_inputs",
    "compile_spec",
    "describe_plan",
    "diff_plans",
    "k8s_manifest",
    "resolve_inputs",
    "write_k8s_manifest",
]
