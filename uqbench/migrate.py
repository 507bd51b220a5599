"""Add to saved results what today's evaluation also saves, without rerunning any run.

``python -m uqbench.migrate RESULTS_DIR [--tasks cifar5] [--data-dir DIR]`` adds to each
run's per-example outputs (``runs/<run>.npz``) where its examples lie in their data sets:
``test.index`` and ``ood.<set>.index`` (:attr:`uqbench.tasks.base.Split.index`), which
evaluations save since results schema 6 and which pair seeds that scored different subsets
of one test pool (:func:`uqbench.compare._test_variance`). The positions are recomputed by
loading each run's data with its recorded settings and seed; they are written only when
the data files have the md5 the run recorded, the recomputed test subset's labels equal the
saved ones, and each OOD subset has the saved size and the recorded class counts. Nothing
else in the file changes, and no run file (``*.json``) is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uqbench.data import DataSource
from uqbench.errors import ResultsError, UQBenchError
from uqbench.registry import TASKS
from uqbench.runner import _write_outputs
from uqbench.tasks.base import TaskData


def _check_same_data(record: dict[str, Any], data: TaskData, outputs: dict[str, np.ndarray]) -> str:
    """Why ``data`` is not the data ``record``'s run was scored on, or "" when it is."""
    recorded = {(f.get("dataset"), f.get("file")): f.get("md5") for f in record["data"]["files"]}
    for f in data.files:
        md5 = recorded.get((f.get("dataset"), f.get("file")))
        if md5 != f.get("md5"):
            return f"data file {f.get('file')} has md5 {f.get('md5')}, the run recorded {md5}"
    if data.test.index is None:
        return "its task's data does not say where the test examples lie"
    if not np.array_equal(data.test.y.cpu().numpy(), outputs.get("test.y")):
        return "the recomputed test subset's labels differ from the saved ones"
    counts = record["data"].get("class_counts") or {}
    for name, idx in data.ood_index.items():
        saved = outputs.get(f"ood.{name}.entropy")
        if saved is None or len(saved) != len(idx):
            return f"OOD set {name}: the recomputed subset's size differs from the saved one"
        want = counts.get(f"ood.{name}")
        labels = data.ood_labels.get(name)
        if want is not None and labels is not None and torch.bincount(labels).tolist() != want:
            return f"OOD set {name}: the recomputed subset's class counts differ"
    return ""


def add_positions(
    results_dir: Path,
    source: DataSource,
    tasks: set[str] | None = None,
    log: Callable[[str], Any] = print,
) -> list[str]:
    """Add ``test.index`` / ``ood.<set>.index`` to the outputs of every finished run in
    ``results_dir/runs`` (of ``tasks``; None: all) that lacks them; returns the runs changed.

    Raises :class:`ResultsError` (before writing that run) when the recomputed subsets do not
    match what the run saved.
    """
    runs_dir = Path(results_dir) / "runs"
    if not runs_dir.is_dir():
        raise ResultsError(f"no runs folder at {runs_dir}")
    changed: list[str] = []
    loaded: dict[str, TaskData] = {}
    for path in sorted(runs_dir.glob("*.json")):
        record = json.loads(path.read_text())
        if record.get("status", "ok") != "ok" or (tasks and record.get("task") not in tasks):
            continue
        preds = record.get("predictions")
        npz = runs_dir / Path(preds).name if isinstance(preds, str) else None
        if npz is None or not npz.is_file():
            log(f"  {path.stem}: no saved outputs, skipped")
            continue
        with np.load(npz) as z:
            outputs = {k: z[k] for k in z.files}
        if "test.index" in outputs:
            continue
        config = record["config"]
        ood = config["eval"].get("ood")
        key = json.dumps([record["task"], record["seed"], config["data"], ood], sort_keys=True)
        if key not in loaded:
            task = TASKS.get(record["task"])()
            loaded[key] = task.load_with_ood(source, ood=ood, seed=record["seed"], **config["data"])
        data = loaded[key]
        why = _check_same_data(record, data, outputs)
        if why:
            raise ResultsError(f"{path}: {why}; its outputs are left as they are")
        outputs["test.index"] = data.test.index.cpu().numpy().astype(np.int64)
        for name, idx in data.ood_index.items():
            outputs[f"ood.{name}.index"] = idx.cpu().numpy().astype(np.int64)
        _write_outputs(npz, outputs)
        changed.append(path.stem)
        log(f"  {path.stem}: positions added to {npz.name}")
    return changed


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
