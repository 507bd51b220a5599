"""Add to saved results what today's evaluation also saves, without rerunning any run.

``python -m uqbench.migrate RESULTS_DIR [--tasks cifar5] [--data-dir DIR]`` adds to each
run's per-example outputs (``runs/<run>.npz``) where its examples lie in their data sets:
``test.index`` and ``ood.<set>.index`` (:attr:`uqbench.tasks.base.Split.index`), which
evaluations save since results schema 6 and which pair seeds that scored different subsets
of one pool (:func:`uqbench.compare._test_variance`). The positions are recomputed by
loading each run's data with its recorded settings and seed, so only for runs made by the
code version of today (``code_version``: the same subset draws) whose data files have the
md5 the run recorded; the recomputed test subset's labels must equal the saved ones, and
each OOD subset must have the saved size and recorded class counts. Nothing is written
unless every run passes; nothing else in an outputs file changes, and no run file
(``*.json``) is touched. Runs it cannot help (failed, no outputs, positions already saved,
a task whose data has none, such as the toy task) are skipped and named.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uqbench.data import DataSource
from uqbench.errors import ResultsError, UQBenchError
from uqbench.provenance import code_version
from uqbench.registry import TASKS
from uqbench.results import readable_archive
from uqbench.runner import _load_run_file, _write_outputs
from uqbench.suites import RunSpec

#: The parts of a run's ``config`` that make a :class:`RunSpec`, in its order.
PARTS = ("train", "eval", "data", "arch", "posterior")


@dataclass
class _Subsets:
    """What a run's data says of its examples: positions, labels, files (not the inputs)."""

    test_index: np.ndarray | None
    test_y: np.ndarray
    ood_index: dict[str, np.ndarray]
    ood_counts: dict[str, list[int]]
    files: list[dict[str, Any]]


def _subsets(source: DataSource, record: dict[str, Any]) -> _Subsets:
    config = record["config"]
    task = TASKS.get(record["task"])()
    data = task.load_with_ood(
        source, ood=config["eval"].get("ood"), seed=record["seed"], **config["data"]
    )
    return _Subsets(
        None if data.test.index is None else data.test.index.numpy().astype(np.int64),
        data.test.y.cpu().numpy(),
        {k: v.numpy().astype(np.int64) for k, v in data.ood_index.items()},
        {k: torch.bincount(v).tolist() for k, v in data.ood_labels.items()},
        data.files,
    )


def _mismatch(record: dict[str, Any], got: _Subsets, outputs: dict[str, np.ndarray]) -> str:
    """Why ``got`` is not the data ``record``'s run was scored on, or "" when it is."""
    recorded = {(f.get("dataset"), f.get("file")): f.get("md5") for f in record["data"]["files"]}
    for f in got.files:
        md5 = recorded.get((f.get("dataset"), f.get("file")))
        if md5 != f.get("md5"):
            return f"data file {f.get('file')} has md5 {f.get('md5')}, the run recorded {md5}"
    if not np.array_equal(got.test_y, outputs.get("test.y")):
        return "the recomputed test subset's labels differ from the saved ones"
    counts = record["data"].get("class_counts") or {}
    for name, idx in got.ood_index.items():
        saved = outputs.get(f"ood.{name}.entropy")
        if saved is None or len(saved) != len(idx):
            return f"OOD set {name}: the recomputed subset's size differs from the saved one"
        want = counts.get(f"ood.{name}")
        if want is not None and got.ood_counts.get(name) not in (None, want):
            return f"OOD set {name}: the recomputed subset's class counts differ"
    return ""


def _why_skipped(path: Path, record: dict[str, Any] | None, why: str | None) -> str:
    """Why a run file is not one to add positions to ("" when it is)."""
    if record is None:
        return str(why)
    if record.get("status", "ok") != "ok":
        return "a failed run"
    config, data = record.get("config"), record.get("data")
    parts = isinstance(config, dict) and all(isinstance(config.get(k), dict) for k in PARTS)
    if not parts or not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return "records no settings or data files (a run file made before schema 2?)"
    preds = record.get("predictions")
    if not isinstance(preds, str):
        return "saved no per-example outputs"
    if not readable_archive(path.parent / Path(preds).name):
        return f"its outputs {Path(preds).name} are missing or unreadable"
    return ""


def add_positions(
    results_dir: Path,
    source: DataSource,
    tasks: set[str] | None = None,
    log: Callable[[str], Any] = print,
) -> list[str]:
    """Add ``test.index`` / ``ood.<set>.index`` to the outputs of every finished run in
    ``results_dir/runs`` (of ``tasks``; None: all) that lacks them; returns the runs changed.

    Raises :class:`ResultsError`, having written nothing, when the recomputed subsets of a
    run do not match what it saved or recorded (another data file, another code version).
    """
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        raise ResultsError(f"no runs folder at {runs_dir}")
    todo: list[tuple[str, Path, dict[str, np.ndarray]]] = []
    refused: list[str] = []
    found: dict[str, _Subsets] = {}
    for path in sorted(runs_dir.glob("*.json")):
        record, why = _load_run_file(path)
        if record is not None and tasks and record["task"] not in tasks:
            continue
        why = _why_skipped(path, record, why)
        if why:
            log(f"  {path.name}: skipped, {why}")
            continue
        assert record is not None
        npz = runs_dir / Path(record["predictions"]).name
        with np.load(npz) as z:
            outputs = {k: z[k] for k in z.files}
        if "test.index" in outputs:
            continue
        config = record["config"]
        key = json.dumps(
            [record["task"], record["seed"], config["data"], config["eval"].get("ood")]
        )
        if key not in found:
            try:
                found[key] = _subsets(source, record)
            except (TypeError, ValueError) as exc:  # settings today's task does not take
                refused.append(f"{path.name}: its data cannot be loaded again ({exc})")
                continue
        got = found[key]
        if got.test_index is None:
            log(f"  {path.name}: skipped, its task's data says not where examples lie")
            continue
        spec = RunSpec(record["method"], record["task"], record["seed"], *map(config.get, PARTS))
        if record.get("code_version") != code_version(*spec.code_classes()):
            refused.append(f"{path.name}: made by code version {record.get('code_version')}")
            continue
        why = _mismatch(record, got, outputs)
        if why:
            refused.append(f"{path.name}: {why}")
            continue
        outputs["test.index"] = got.test_index
        for name, idx in got.ood_index.items():
            outputs[f"ood.{name}.index"] = idx
        todo.append((path.stem, npz, outputs))
    if refused:
        raise ResultsError(
            f"{len(refused)} run(s) cannot be given positions, so none was: " + "; ".join(refused)
        )
    for stem, npz, outputs in todo:
        _write_outputs(npz, outputs)
        log(f"  {stem}: positions added to {npz.name}")
    return [stem for stem, _, _ in todo]


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    p = argparse.ArgumentParser(
        prog="python -m uqbench.migrate", description=__doc__.split("\n")[0]
    )
    p.add_argument("results_dir", type=Path, help="a suite's results folder (holds runs/)")
    p.add_argument("--tasks", nargs="*", help="only the runs of these tasks (default: all)")
    p.add_argument("--data-dir", help="data folder (default: $UQBENCH_DATA_DIR, then the cache)")
    p.add_argument(
        "--allow-unverified", action="store_true", help="accept data files with bad checksums"
    )
    args = p.parse_args(argv)
    source = DataSource.resolve(
        args.data_dir, download=False, allow_unverified=args.allow_unverified or None
    )
    try:
        changed = add_positions(args.results_dir, source, set(args.tasks or []) or None)
    except UQBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(changed)} run(s) given their examples' positions in {args.results_dir}/runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
