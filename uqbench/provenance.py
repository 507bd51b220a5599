"""Which code made a result, and when a result may be reused.

Two identities are recorded with every run:

* ``code_version`` - what run files are keyed on: ``"t<T>.e<E>"``, uqbench's
  :data:`TRAIN_VERSION` and :data:`EVAL_VERSION`, plus, for a run of a plug-in posterior,
  task or OOD set (a class defined outside uqbench's own packages), ``-`` and a digest of
  the plug-in's source files (every ``*.py`` of the distribution or package that defines
  it, and of any plug-in it derives from). Results are reused only when it matches, so a
  commit that does not change behaviour (a refactoring, a new report table, a docstring)
  keeps every result already computed, and a change to a plug-in's code, in any of its
  files, redoes that plug-in's runs. Checkpoints are keyed on :func:`train_version` alone
  (no OOD set): a change to the evaluation (a new metric, an edited plug-in OOD set)
  re-evaluates the trained models instead of retraining them. Run files also name the
  plug-ins, with their distributions and versions (:func:`plugin_sources`).
* ``source_version`` - informational: ``"src-"`` + a digest of every ``*.py`` of uqbench's
  own packages as imported (``uqbench`` and ``uqbench.baselines``, not
  ``uqbench.benchmarks``) plus the plug-in files; it changes with any edit.
* ``git_commit`` - informational: ``$UQBENCH_GIT_COMMIT`` when set (for copies without
  git metadata), else the commit of the git checkout that the imported ``uqbench``
  package is tracked in (``None`` when it is not in one, e.g. a pip-installed copy).

How a change is judged to alter behaviour: CI runs the ci suite and requires every metric to
be bit-identical to ``results/reference/ci.json`` (the tripwire of ``uqbench check --exact``).
A change that moves a training log (per-epoch losses: the trained models differ)
must bump :data:`TRAIN_VERSION`; one that moves only metrics must bump :data:`EVAL_VERSION`;
either way the reference is regenerated, and ``results/reference/behaviour.json`` pairs each
(train, eval) version with the digests of the reference's training logs and metrics: a test
requires its newest line to match the constants and the committed reference, and each new line
to bump the version whose digest changed. A behaviour change the ci suite cannot see (a code
path none of its runs takes) must be bumped by hand.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import uqbench

#: Packages whose sources make up uqbench's own code.
OWN_PACKAGES = ("uqbench", "uqbench.baselines")
#: Subpackages that make no run (performance benchmarks), left out wherever they lie.
NOT_OWN = ("uqbench.benchmarks", "uqbench.builtin_suites")

#: Bump when trained models change (the ci reference's training logs move): module docstring.
TRAIN_VERSION = 2
#: Bump when the evaluation of the same trained model changes (only metrics move).
EVAL_VERSION = 3


@functools.cache
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


@functools.lru_cache(maxsize=1)
def _own_files() -> tuple[tuple[str, str], ...]:
    """(module path as ``uqbench/baselines/l2.py``, absolute path) of every own source file.

    Named by module, not by folder, so that a checkout (``baselines/`` beside
    ``uqbench/``) and an installed copy (``uqbench/baselines/``) give the same names.
    """
    import importlib

    skip = tuple(n.replace(".", "/") + "/" for n in NOT_OWN)
    files: dict[str, str] = {}
    for pkg_name in OWN_PACKAGES:
        try:
            pkg = importlib.import_module(pkg_name)
        except ImportError:
            continue
        prefix = pkg_name.replace(".", "/")
        for root in getattr(pkg, "__path__", []):
            base = Path(root)
            for p in sorted(base.rglob("*.py")):
                name = f"{prefix}/{p.relative_to(base).as_posix()}"
                if not name.startswith(skip):
                    files.setdefault(name, str(p))
    return tuple(sorted(files.items()))


def _plugin_classes(classes: tuple[type, ...], own_paths: set[str]) -> list[tuple[type, str]]:
    """(class, source file) of each plug-in class behind ``classes``: each class, and each
    base class it derives from before one of uqbench's own (a plug-in may derive from
    another plug-in's family)."""
    found: list[tuple[type, str]] = []
    for cls in classes:
        for k in inspect.getmro(cls) if inspect.isclass(cls) else ():
            try:
                src = inspect.getsourcefile(k)
            except TypeError:  # a built-in class
                src = None
            if src is None or src in own_paths or k.__module__.split(".")[0] == "uqbench":
                break
            found.append((k, src))
    return found


def _plugin_files(classes: tuple[type, ...], own_paths: set[str]) -> list[tuple[str, str]]:
    """(name, path) of the plug-in source files behind ``classes``: for each plug-in class
    (:func:`_plugin_classes`), the files of the plug-in that defines it
    (:func:`_plugin_scope`)."""
    entries: list[tuple[str, str]] = []
    for k, src in _plugin_classes(classes, own_paths):
        entries += _plugin_scope(k.__module__.split(".")[0], src)
    return entries


def plugin_sources(*classes: type) -> list[dict[str, str | None]]:
    """Which plug-ins a run's code came from, for people to read (``code_version``'s digest
    is what results are reused under).

    One entry per plug-in class behind ``classes`` (uqbench's own add none): ``class``
    (``module:qualname``), ``distribution`` (the installed distribution providing its
    file) and that distribution's ``version``; both None for a module that no installed
    distribution provides (a folder on ``sys.path``).
    """
    own_paths = {p for _, p in _own_files()}
    entries: list[dict[str, str | None]] = []
    for k, src in _plugin_classes(classes, own_paths):
        name = f"{k.__module__}:{k.__qualname__}"
        if any(e["class"] == name for e in entries):
            continue
        dist_name, version = _distribution_of(k.__module__.split(".")[0], src)
        entries.append({"class": name, "distribution": dist_name, "version": version})
    return entries


@functools.cache
def _distribution_of(top: str, src: str) -> tuple[str | None, str | None]:
    """(name, version) of the installed distribution that provides ``src``, a file of the
    top-level module or package ``top``: the one among those providing ``top`` (several for
    a namespace package) whose files include it, else the first; (None, None) if none."""
    found: list[tuple[str, str]] = []
    for dist_name in importlib.metadata.packages_distributions().get(top, []):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append((dist.metadata["Name"] or dist_name, dist.version))
        target = Path(src).resolve()
        if any(Path(str(f.locate())).resolve() == target for f in dist.files or []):
            return found[-1]
    return found[0] if found else (None, None)


@functools.cache
def _plugin_scope(top: str, src: str) -> tuple[tuple[str, str], ...]:
    """Every ``*.py`` file of the plug-in whose top-level module or package is ``top``
    (``src``: the file defining the class), named relative to where ``top`` lies.

    That is the files of the installed distribution that provides ``top`` (a helper
    module of the same distribution counts), plus those of the package ``top`` itself
    (an editable install or a folder on ``sys.path``); a lone module is its own file.
    """
    files: dict[str, str] = {}
    for dist_name in importlib.metadata.packages_distributions().get(top, []):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            if f.suffix == ".py" and not str(f).startswith(".."):  # not scripts in bin/
                path = Path(str(f.locate()))
                if path.is_file():
                    files.setdefault(f.as_posix(), str(path))
    module = sys.modules.get(top)
    roots = list(getattr(module, "__path__", []) or [])
    for root in roots:
        base = Path(root)
        for path in sorted(base.rglob("*.py")):
            files.setdefault(path.relative_to(base.parent).as_posix(), str(path))
    if not files or not roots:
        files.setdefault(Path(src).name, src)
    return tuple(sorted((f"{top}:{name}", path) for name, path in files.items()))


def _digest(entries: list[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for name, path in sorted(set(entries)):
        h.update(f"{name}\0{_file_digest(path)}\n".encode())
    return h.hexdigest()[:16]


def _versioned(version: str, classes: tuple[type, ...]) -> str:
    own_paths = {p for _, p in _own_files()}
    plugins = _plugin_files(classes, own_paths)
    return f"{version}-{_digest(plugins)}" if plugins else version


def code_version(*classes: type) -> str:
    """The identity run files are reused under: the train and eval versions, plus plug-in files.

    Pass a run's posterior and task classes so that a change to a plug-in's code is
    seen too; uqbench's own classes add nothing (their changes bump the versions).
    """
    return _versioned(f"t{TRAIN_VERSION}.e{EVAL_VERSION}", classes)


def train_version(*classes: type) -> str:
    """The identity checkpoints (trained models) are reused under: :func:`code_version`
    without the evaluation's version."""
    return _versioned(f"t{TRAIN_VERSION}", classes)


def source_version(*classes: type) -> str:
    """Digest of uqbench's and the baselines' sources plus the files defining ``classes``."""
    own = _own_files()
    entries = list(own) + _plugin_files(classes, {p for _, p in own})
    return "src-" + _digest(entries)


@functools.lru_cache(maxsize=4)
def _checkout_commit(pkg_dir: str) -> str | None:
    try:
        tracked = subprocess.run(
            ["git", "-C", pkg_dir, "ls-files", "--error-unmatch", "__init__.py"],
            capture_output=True,
            timeout=5,
        )
        if tracked.returncode != 0:
            return None
        out = subprocess.run(
            ["git", "-C", pkg_dir, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_commit() -> str | None:
    """``$UQBENCH_GIT_COMMIT``, else the git commit of the checkout uqbench is imported from."""
    if os.environ.get("UQBENCH_GIT_COMMIT"):
        return os.environ["UQBENCH_GIT_COMMIT"].strip()
    return _checkout_commit(str(Path(uqbench.__file__).resolve().parent))


def _repeatable(part: Any) -> Any:
    """A results part without its wall-clock times (which no two runs share)."""
    if isinstance(part, dict):
        return {k: v for k, v in part.items() if k != "seconds"}
    return part


def reference_digests(results: dict) -> dict[str, str]:
    """Digests of every run's training log and of its metrics in a merged results file.

    Order-independent. ``results/reference/behaviour.json`` records them for the ci
    reference made at each (train, eval) version.
    """
    out = {}
    for part in ("train_log", "metrics"):
        runs = sorted(
            json.dumps(
                [r["method"], r["task"], r["seed"], _repeatable(r.get(part))], sort_keys=True
            )
            for r in results.get("runs", [])
        )
        out[part] = hashlib.sha256("\n".join(runs).encode()).hexdigest()
    return out
