"""The results files (schema ``uqbench.results/6``): reading and validating them.

``results/<suite>/runs/*.json`` hold one run each (schema ``uqbench.run/6``);
``results/<suite>/results.json`` merges them. Both schemas are a public contract:
a change bumps the version and is noted in the README. Version 2 added, per run,
``status``, ``code_version`` and ``checkpoint``, and at the top ``failed`` and
``left_out``; version 3 made ``code_version`` the behaviour version results are reused
under and added ``source_version`` (:mod:`uqbench.provenance`); version 4 added
``metrics.fgsm.perturbation`` and ``budget_share`` and ``data.class_counts``; version 5
added each run's ``train_steps`` (how its training steps ran: eager or compiled) and, for
runs trained together by ``--vectorize-seeds``, ``vectorized_seeds``; version 6 added each
run's ``plugins`` (the plug-in classes, distributions and versions behind it). Files of
versions 1 to 5 are still read.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

from uqbench.errors import ResultsError

RESULTS_SCHEMA = "uqbench.results/6"
RUN_SCHEMA = "uqbench.run/6"
#: Schemas that can still be read: each version only adds to the one before (README, schema).
READABLE_RESULTS_SCHEMAS = (
    "uqbench.results/1",
    "uqbench.results/2",
    "uqbench.results/3",
    "uqbench.results/4",
    "uqbench.results/5",
    RESULTS_SCHEMA,
)


def validate_results(results: dict, what: str = "results") -> None:
    """Refuse a dict that is not a merged results file of a readable schema."""
    if not isinstance(results, dict):
        raise ResultsError(f"{what} is not a JSON object")
    schema = results.get("schema")
    if schema not in READABLE_RESULTS_SCHEMAS:
        raise ResultsError(
            f"{what} has schema {schema!r}; expected one of {READABLE_RESULTS_SCHEMAS} "
            "(a merged results.json, not a per-run file or another format)"
        )
    if not isinstance(results.get("runs"), list):
        raise ResultsError(f"{what} has no 'runs' list")
    validate_runs(results["runs"], what)


def validate_runs(runs: list, what: str = "results") -> None:
    """Refuse runs that do not say which method, task and seed they are."""
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise ResultsError(f"{what}: runs[{i}] is not a JSON object")
        bad = [k for k in ("method", "task") if not isinstance(run.get(k), str)]
        seed = run.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            bad.append("seed")
        if bad:  # a run without its seed cannot be paired with the other methods' seeds
            raise ResultsError(
                f"{what}: runs[{i}] has no valid {', '.join(repr(k) for k in bad)} "
                "(a string method and task, an integer seed)"
            )


def resolve_results_path(path: Path, what: str = "results file") -> Path:
    """A results.json file, or the results.json inside a results directory (``what`` names
    it in the error)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise ResultsError(f"no {what} at {path}")
    return path


def readable_archive(path: Path) -> bool:
    """Whether ``path`` is a zip archive (a run's saved ``.npz``) whose every member reads
    back with its checksum intact: a damaged one is not the run's outputs."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except Exception:  # noqa: BLE001 - missing, truncated, corrupt: all the same here
        return False


def read_json(path: Path, what: str = "file") -> Any:
    """Parse a JSON file; ResultsError (naming ``what`` and the path) when that fails."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise ResultsError(f"{what} {path} does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"cannot read {what} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ResultsError(f"cannot read {what} {path}: not a text (UTF-8 JSON) file") from None


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json (or the results.json inside a results directory)."""
    p = resolve_results_path(Path(path))
    results = read_json(p, "results file")
    validate_results(results, str(p))
    return results


def unique_tmp(path: Path) -> Path:
    """A temporary name beside ``path`` that no other process or thread uses (write there,
    then ``os.replace`` it onto ``path``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
