"""Name -> class registries for posterior families and tasks.

Built-in and third-party entries register the same way: a class decorator
(``@register_posterior("name")``) in a module that the Python entry-point group
(``uqbench.posteriors``, ``uqbench.tasks`` or ``uqbench.ood_sets``) points at. Entry
points are loaded lazily, the first time a registry is asked for its contents.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import sys
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from uqbench.errors import RegistryError

T = TypeVar("T")

#: What a registered name may look like: it becomes part of run and checkpoint file names.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
#: The distribution whose entry points are uqbench's own (loaded before any plug-in's).
OWN_DISTRIBUTION = "uqbench"


class Registry(Generic[T]):
    """A registry of classes of one kind, filled by decorators and entry points."""

    def __init__(self, kind: str, group: str, base: str | None = None) -> None:
        """``base`` (``"module:Class"``, imported on first use): the class every entry must
        subclass; ``None``: any class."""
        self.kind = kind
        self.group = group
        self.base = base
        self._entries: dict[str, type[T]] = {}
        self._origin: dict[str, str] = {}
        self._discovered = False
        self._discovering = False
        self._loaded: set[tuple[str, str]] = set()

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator registering ``cls`` under ``name``."""
        if inspect.isclass(name):  # @register_x without its (name): it would register nothing
            raise RegistryError(
                f"the {self.kind} decorator needs a name: write "
                f'@uqbench.{self.decorator}("name") above class {name.__qualname__}, '
                f"not @uqbench.{self.decorator}"
            )
        self._check_name(name)

        def decorator(cls: type[T]) -> type[T]:
            self.add(name, cls)
            return cls

        return decorator

    @property
    def decorator(self) -> str:
        """The public decorator's name (``register_posterior``, ...), for messages."""
        return "register_" + self.group.rpartition(".")[2].removesuffix("s")

    def _check_name(self, name: object) -> None:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise RegistryError(
                f"{self.kind} name must be letters, digits and . _ + - (not starting with "
                f". + -), as it becomes part of file names; got {name!r}"
            )

    def add(self, name: str, cls: type[T], origin: str | None = None) -> None:
        """Register ``cls`` under ``name``; re-registering the same class is a no-op."""
        self._check_name(name)
        origin = origin or (_qualname(cls) if inspect.isclass(cls) else repr(cls))
        self._check_base(name, cls, origin)
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

    def _check_base(self, name: str, cls: type, origin: str) -> None:
        if self.base is None:
            return
        module, _, attr = self.base.partition(":")
        base = getattr(importlib.import_module(module), attr)
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise RegistryError(
                f"{self.kind} {name!r} ({origin}) is not a subclass of {module}.{attr}"
            )

    def discover(self) -> None:
        """Load every entry point of the group; a broken plug-in names itself.

        uqbench's own entry points load first, so that a plug-in that reuses a built-in
        name is the one named. A failure is raised again on every later call (the
        registry stays incomplete, so nothing may use it); entry points already loaded
        are not loaded twice.
        """
        if self._discovered or self._discovering:  # a plug-in asking while it is imported
            return
        self._discovering = True
        try:
            self._discover()
        finally:
            self._discovering = False

    def _discover(self) -> None:
        def dist_of(ep: importlib.metadata.EntryPoint) -> str:
            return ep.dist.name if ep.dist is not None else "unknown distribution"

        eps = importlib.metadata.entry_points(group=self.group)
        for ep in sorted(eps, key=lambda e: (dist_of(e) != OWN_DISTRIBUTION, e.name)):
            if (ep.name, ep.value) in self._loaded:
                continue
            dist = dist_of(ep)
            where = f"{self.kind} plug-in {ep.name!r} ({ep.value}, from {dist})"
            fresh = ep.module not in sys.modules
            before = set(self._entries)
            try:
                obj = ep.load()
                if inspect.isclass(obj):
                    self._add_entry_point_class(ep.name, obj, f"{ep.name} = {ep.value} ({dist})")
            except RegistryError as exc:  # it registered a name already taken, or a bad one
                raise RegistryError(f"{where}: {exc}") from exc
            except Exception as exc:  # noqa: BLE001 - any import failure names the plug-in
                tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
                raise RegistryError(f"{where} failed to import: {tb}") from exc
            # A module's decorators pick their names (which need not be the entry point's),
            # but a module (or package) that registered nothing on import lacks its decorator.
            if fresh and ep.name not in self._entries and set(self._entries) <= before:
                raise RegistryError(
                    f"{where} registered no {self.kind}: decorate its class with "
                    f"@uqbench.{self.decorator}({ep.name!r}), or point the entry point at "
                    "the class"
                )
            self._loaded.add((ep.name, ep.value))
        self._discovered = True

    def _add_entry_point_class(self, name: str, cls: type[T], where: str) -> None:
        """Register a class an entry point names; a class its decorator registered under
        another name is refused (it would run twice, under two names)."""
        other = [n for n, c in self._entries.items() if c is cls and n != name]
        if other:
            raise RegistryError(
                f"the class registered itself as {other[0]!r}, but its entry point names it "
                f"{name!r}: use one name for both"
            )
        self.add(name, cls, origin=f"entry point {where}")

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
        self._loaded = set()

    def snapshot(self) -> tuple[dict[str, type[T]], dict[str, str], bool, set[tuple[str, str]]]:
        """The registry's state, for :meth:`restore` (tests that register temporarily).

        Entry points are loaded first: their modules register only on first import.
        """
        self.discover()
        return dict(self._entries), dict(self._origin), self._discovered, set(self._loaded)

    def restore(
        self, state: tuple[dict[str, type[T]], dict[str, str], bool, set[tuple[str, str]]]
    ) -> None:
        """Return to a state taken with :meth:`snapshot`."""
        entries, origin, discovered, loaded = state
        self._entries = dict(entries)
        self._origin = dict(origin)
        self._discovered = discovered
        self._loaded = set(loaded)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


POSTERIORS: Registry = Registry(
    "posterior", "uqbench.posteriors", base="uqbench.posterior:Posterior"
)
TASKS: Registry = Registry("task", "uqbench.tasks", base="uqbench.tasks.base:Task")
OOD_SETS: Registry = Registry("OOD set", "uqbench.ood_sets", base="uqbench.ood:OODSet")
