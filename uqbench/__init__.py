"""uqbench: which approximate posterior gives the best accuracy and the most honest
uncertainty, measured the same way on the same work.

Public API: the posterior and task registries (``register_posterior``,
``get_posterior``, ``list_posteriors``, ``register_task``, ``get_task``,
``list_tasks``), the :class:`Posterior` and :class:`Task` base classes, and
:func:`load_posterior`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uqbench.errors import ConfigError, DataError, RegistryError, ResultsError, UQBenchError
from uqbench.registry import POSTERIORS, TASKS

if TYPE_CHECKING:
    from uqbench.architectures import LayerFactory, ModelSpec, PlainLayers, build_network
    from uqbench.posterior import Posterior, load_posterior
    from uqbench.tasks.base import Split, Task, TaskData

__version__ = "0.1.0"

# Imported on first use, so that `import uqbench.cli` does not wait for torch: the CLI
# then handles Ctrl-C (and every error) from its first instant.
_LAZY = {
    "LayerFactory": "uqbench.architectures",
    "ModelSpec": "uqbench.architectures",
    "PlainLayers": "uqbench.architectures",
    "build_network": "uqbench.architectures",
    "Posterior": "uqbench.posterior",
    "load_posterior": "uqbench.posterior",
    "Split": "uqbench.tasks.base",
    "Task": "uqbench.tasks.base",
    "TaskData": "uqbench.tasks.base",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'uqbench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def register_posterior(name: str) -> Callable[[type[Posterior]], type[Posterior]]:
    """Class decorator: register a :class:`Posterior` subclass under ``name``."""
    return POSTERIORS.register(name)


def get_posterior(name: str) -> type[Posterior]:
    """The posterior family registered as ``name`` (unknown names list the known)."""
    return POSTERIORS.get(name)


def list_posteriors() -> list[str]:
    """Names of all registered posterior families, built-in and plug-ins."""
    return POSTERIORS.names()


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a :class:`Task` subclass under ``name``."""
    return TASKS.register(name)


def get_task(name: str) -> type[Task]:
    """The task registered as ``name``."""
    return TASKS.get(name)


def list_tasks() -> list[str]:
    """Names of all registered tasks."""
    return TASKS.names()


__all__ = [
    "ConfigError",
    "DataError",
    "LayerFactory",
    "ModelSpec",
    "PlainLayers",
    "Posterior",
    "RegistryError",
    "ResultsError",
    "Split",
    "Task",
    "TaskData",
    "UQBenchError",
    "__version__",
    "build_network",
    "get_posterior",
    "get_task",
    "list_posteriors",
    "list_tasks",
    "load_posterior",
    "register_posterior",
    "register_task",
]
