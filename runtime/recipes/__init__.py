"""Recipes: one file each, read top to bottom, written with the training library (``ftc.runtime.training``) only.
``sft`` fine-tunes on chat examples (the only one today). A recipe imports no other recipe and nothing of the launch
layer, which starts it."""

__all__ = ["sft"]
