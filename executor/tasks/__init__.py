"""Task modules: what runs in the sandbox for a task, one plug-in per module.

A plug-in (a `TaskModule` subclass in this folder, registered with `@register`) names its
WebAssembly source (in executor/modules/, built from source by executor/build.py), the task
kinds it serves, and how a task's working folder is prepared (input files, argv). The kind of
a planned task comes from the domain (`processors.execution.task_kind`).
"""
from executor.tasks.base import REGISTRY, TaskModule, module_for, register  # noqa: F401
from executor.tasks import builtin  # noqa: F401  (registers the built-in modules)
