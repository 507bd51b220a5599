"""Name -> class registries for posterior families and tasks.

Built-in and third-party entries register the same way: a class decorator
(``@register_posterior("name")``) in a module that the Python entry-point group
(``uqbench.posteriors``, ``uqbench.tasks`` or ``uqbench.ood_sets``) points at. Entry
points are loaded lazily, the first time a registry is asked for its contents.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from uqbench.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A registry of classes of one kind, filled by decorators and entry points."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, type[T]] = {}
        self._origin: dict[str, str] = {}
        self._discovered = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering ``cls`` under ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            self.add(name, cls)
            return cls

        return decorator

    def add(self, name: str, cls: type[T], origin: str | None = None) -> None:
        """Register ``cls`` under ``name``; re-registering the same class is a no-op."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        origin = origin or f"{cls.__module__}.{cls.__qualname__}"
        existing = self._entries.get(name)
        if existing is not None and _qualname(existing) != _qualname(cls):
            raise RegistryError(
                f"duplicate {self.kind} name {name!r}: already registered by "
                f"{self._origin[name]}, registered again by {origin}"
            )
        self._entries[name] = cls
        self._origin[name] = origin
        try:
            cls.name = name  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            pass

    def discover(self) -> None:
        """Load every entry point of the group once; a broken plug-in names itself."""
        if self._discovered:
            return
        self._discovered = True
        for ep in sorted(importlib.metadata.entry_points(group=self.group), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure names the plug-in
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                raise RegistryError(
                    f"{self.kind} plug-in {ep.name!r} ({ep.value}, from {dist}) failed to "
                    f"import: {tb}"
                ) from exc
            if inspect.isclass(obj) and ep.name not in self._entries:
                self.add(ep.name, obj, origin=f"entry point {ep.name} = {ep.value} ({dist})")

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``; an unknown name lists the known ones."""
        self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.discover()
        return sorted(self._entries)

    def reset_discovery(self) -> None:
        """Forget that entry points were loaded (for tests that add plug-ins)."""
        self._discovered = False

    def snapshot(self) -> tuple[dict[str, type[T]], dict[str, str], bool]:
        """The registry's state, for :meth:`restore` (tests that register temporarily).

        Entry points are loaded first: their modules register only on first import.
        """
        self.discover()
        return dict(self._entries), dict(self._origin), self._discovered

    def restore(self, state: tuple[dict[str, type[T]], dict[str, str], bool]) -> None:
        """Return to a state taken with :meth:`snapshot`."""
        entries, origin, discovered = state
        self._entries = dict(entries)
        self._origin = dict(origin)
        self._discovered = discovered


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


POSTERIORS: Registry = Registry("posterior", "uqbench.posteriors")
TASKS: Registry = Registry("task", "uqbench.tasks")
OOD_SETS: Registry = Registry("OOD set", "uqbench.ood_sets")
