"""Exceptions that carry a message meant for the user.

The CLI prints these without a traceback; anything else is a bug.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager


class UQBenchError(Exception):
    """Base class for errors whose message alone tells the user what went wrong."""


class RegistryError(UQBenchError):
    """Unknown name, duplicate name, or a plug-in that failed to load."""


class DataError(UQBenchError):
    """A data set is missing, unreadable, or failed its checksum."""


class ConfigError(UQBenchError):
    """A suite file or command-line override has a bad key or value."""


class ResultsError(UQBenchError):
    """A results file has the wrong schema, suite or runs."""


class TrainingError(UQBenchError):
    """Training or evaluation gave non-finite numbers; the message names the run, epoch and step."""


class OutputError(UQBenchError):
    """A results folder or the cache cannot be written, or another run is writing it."""


class PluginError(UQBenchError):
    """A posterior's layers break the layer contract; the message names the module."""


@contextmanager
def plugin_call(where: str, owner: type) -> Iterator[None]:
    """Run a plug-in's code (a task's or OOD set's ``load``): an exception that is not one
    of ours becomes a :class:`PluginError` naming ``where`` and the exception, in one line.
    uqbench's own classes (``owner`` defined in ``uqbench``) keep their tracebacks (a bug
    there is ours), and so do OS errors (the CLI names the file) and running out of memory."""
    if owner.__module__.split(".")[0] == "uqbench":
        yield
        return
    try:
        yield
    except (UQBenchError, OSError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of plug-in code names the plug-in
        line = traceback.format_exception_only(type(exc), exc)[-1].strip()
        raise PluginError(f"{where} raised {line}") from exc
