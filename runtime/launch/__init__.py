"""The launch layer: how a plan is started and watched. It checks the plan and its inputs, takes the output
folder's lock, then runs the plan's recipe here (``local``: this interpreter, or torch.distributed.run's processes),
in the plan's image (``docker``) or on a Ray cluster (``ray``); it uploads checkpoints to a store (``publish``) and
reruns a checkpoint's plan (``reproduce``). It imports the recipes and the training library; they never import it.
"""

from ._backend import choose_backend, run
from .local import Rendezvous, run_plan, worker_main

__all__ = ["Rendezvous", "choose_backend", "run", "run_plan", "worker_main"]
