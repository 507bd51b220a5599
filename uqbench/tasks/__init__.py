"""Benchmark tasks; each is one file registered in the ``uqbench.tasks`` group."""

from uqbench.tasks.base import Split, Task, TaskData

__all__ = ["Split", "Task", "TaskData"]
