"""The verbs of ``ftc``, one module each (a group's subcommands together), each a few lines over a library function.

:data:`ftc.cli.COMMANDS` names every verb's module; a module is imported only when its verb runs, so ``ftc --help``
and each verb start without importing the others (nor, but for ``run``, the training stack).
"""
