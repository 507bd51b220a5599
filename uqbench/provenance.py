"""Which code made a result: the version of uqbench's own source, not the current directory's.

Two identities are recorded with every run:

* ``code_version`` - ``"src-"`` + a digest of the Python source files that determine a
  run: every ``*.py`` of the ``uqbench`` package and of ``uqbench.baselines`` (the
  top-level ``baselines/`` folder) as imported, but not ``uqbench.benchmarks``, plus
  the files defining the run's posterior family and task (plug-ins included). It is
  computed from the files themselves, so it is the same for a git checkout, an
  installed copy or a tree shipped without git metadata, and it changes with any edit,
  committed or not. Run files and checkpoints are reused only when it matches.
* ``git_commit`` - informational: ``$UQBENCH_GIT_COMMIT`` when set (for copies without
  git metadata), else the commit of the git checkout that the imported ``uqbench``
  package is tracked in (``None`` when it is not in one, e.g. a pip-installed copy).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import subprocess
from pathlib import Path

import uqbench

#: Packages whose sources make up uqbench's own code version.
OWN_PACKAGES = ("uqbench", "uqbench.baselines")
#: Subpackages that make no run (performance benchmarks), left out wherever they lie.
NOT_OWN = ("uqbench.benchmarks",)


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


def code_version(*classes: type) -> str:
    """Digest of uqbench's and the baselines' sources plus the files defining ``classes``.

    Pass a run's posterior and task classes so that a change to a plug-in's code is
    seen too.
    """
    h = hashlib.sha256()
    own = _own_files()
    own_paths = {p for _, p in own}
    entries = list(own)
    for cls in classes:
        try:
            src = inspect.getsourcefile(cls)
        except TypeError:
            src = None
        if src and src not in own_paths:
            entries.append((f"{cls.__module__}:{Path(src).name}", src))
    for name, path in sorted(set(entries)):
        h.update(f"{name}\0{_file_digest(path)}\n".encode())
    return "src-" + h.hexdigest()[:16]


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
