"""Weights published on a model hub, named by their model id (``hf://<model_id>``): never pinned (no revision is
known at compile time), read by id at run time from the Hugging Face cache; a container or a cluster runs offline
and cannot read them."""

from __future__ import annotations

from ftc.spec.plan import PlanInput

from .base import CLUSTER_REACHES, ResolvedInput, SourceKind

__all__ = ["Hub", "hub_input"]


def hub_input(model_id: str) -> ResolvedInput:
    """The published weights of ``model_id``: named, not pinned (no revision is known at compile time)."""
    return ResolvedInput(PlanInput(source="hub", uri=f"hf://{model_id}", pinned=False))


class Hub(SourceKind):
    name = "hub"
    names_a_model = True

    def model_id(self, item: PlanInput) -> str:
        return item.uri.removeprefix("hf://")

    def container_problem(self, role: str, item: PlanInput) -> str | None:
        return (
            f"{role}: {item.uri} comes from a model hub, which a container run does not reach (it runs offline); "
            "give the weights as initial_base_model_ckpt_path and recompile, or run with --backend local"
        )

    def cluster_problem(self, role: str, item: PlanInput) -> str | None:
        return (
            f"{role}: {item.uri} is not pinned, and the pods do not reach the hub (HF_HUB_OFFLINE=1)"
            f"\n    fix: download the weights and give them as initial_base_model_ckpt_path: {CLUSTER_REACHES}"
        )

    def namespace(self, source: dict) -> str:
        return "hf"
