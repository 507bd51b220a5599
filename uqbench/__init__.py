"""uqbench: which approximate posterior gives the best accuracy and the most honest
uncertainty, measured the same way on the same work.

Public API: the posterior, task and OOD-set registries (``register_posterior``,
``get_posterior``, ``list_posteriors``, ``register_task``, ``get_task``,
``list_tasks``, ``register_ood_set``, ``get_ood_set``, ``list_ood_sets``), the
:class:`Posterior`, :class:`Task` and :class:`OODSet` base classes, and
:func:`load_posterior`. Readers of the data formats are in :mod:`uqbench.data`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uqbench.errors import (
    ConfigError,
    DataError,
    PluginError,
    RegistryError,
    ResultsError,
    UQBenchError,
)
from uqbench.registry import OOD_SETS, POSTERIORS, TASKS

if TYPE_CHECKING:
    from uqbench.architectures import LayerFactory, ModelSpec, PlainLayers, build_network
    from uqbench.ood import OODData, OODSet
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
    "OODData": "uqbench.ood",
    "OODSet": "uqbench.ood",
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


def register_ood_set(name: str) -> Callable[[type[OODSet]], type[OODSet]]:
    """Class decorator: register an :class:`OODSet` subclass under ``name``."""
    return OOD_SETS.register(name)


def get_ood_set(name: str) -> type[OODSet]:
    """The OOD set registered as ``name``."""
    return OOD_SETS.get(name)


def list_ood_sets() -> list[str]:
    """Names of all registered OOD sets, built-in and plug-ins."""
    return OOD_SETS.names()


__all__ = [
    "ConfigError",
    "DataError",
    "LayerFactory",
    "ModelSpec",
    "OODData",
    "OODSet",
    "PlainLayers",
    "PluginError",
    "Posterior",
    "RegistryError",
    "ResultsError",
    "Split",
    "Task",
    "TaskData",
    "UQBenchError",
    "__version__",
    "build_network",
    "get_ood_set",
    "get_posterior",
    "get_task",
    "list_ood_sets",
    "list_posteriors",
    "list_tasks",
    "load_posterior",
    "register_ood_set",
    "register_posterior",
    "register_task",
]
