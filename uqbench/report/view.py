"""A read-only view of merged results: runs grouped by task and method, values averaged over seeds.

Pure data: no colours, no display names, no ordering beyond the alphabetical (the report's
:class:`uqbench.report.style.ReportView` adds those). :mod:`uqbench.compare` and
:mod:`uqbench.paper` read results through this view alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from uqbench import stats as S
from uqbench.errors import ResultsError
from uqbench.results import validate_runs


def get_path(d: Any, path: Iterable[str]) -> Any:
    """``d[path[0]][path[1]]...``, or None where a key is missing or a level is not a dict."""
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def finite(x: Any) -> float | None:
    """``x`` as a finite float, else None (booleans, strings, NaN and inf included)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


class ResultsView:
    """Read-only access to a merged results dict, grouped by task and method.

    Scalars and curves are averaged over seeds; anything missing reads as ``None``.
    ``base_dir`` is the results directory, where runs' saved per-example outputs live
    (``runs/<run>.npz``); without it, intervals come from seeds alone. ``run_dirs`` gives
    the directory of each run (``(method, task, seed)``) of results merged from several
    (:func:`uqbench.check.read_merged`). Tasks and methods are listed alphabetically; a
    subclass orders them by overriding :meth:`task_order` and :meth:`method_order`.
    """

    def __init__(
        self,
        results: dict[str, Any],
        base_dir: Path | None = None,
        *,
        test_noise: bool = False,
        run_dirs: Mapping[tuple[str, str, int], Path] | None = None,
    ) -> None:
        runs = results.get("runs")
        if not isinstance(runs, list):
            raise ResultsError("results have no 'runs' list; is this a merged results.json?")
        validate_runs(runs)
        self.results = results
        self.runs = runs
        self._by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in self.runs:
            self._by[(r["task"], r["method"])].append(r)
        for v in self._by.values():
            v.sort(key=lambda r: r["seed"])
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.run_dirs = dict(run_dirs or {})
        #: Intervals and comparisons already computed (bootstraps are not free).
        self.cache: dict[tuple[Any, ...], Any] = {}
        self._outputs: dict[str, Any] = {}
        #: Coverage of the intervals :mod:`uqbench.compare` computes on this view.
        self.level = S.LEVEL
        #: Widen the intervals over seeds by the test set's noise (from saved outputs).
        self.test_noise = test_noise

    def at_level(self, level: float) -> AbstractContextManager[ResultsView]:
        """Compute intervals at ``level`` inside the block (a multiplicity correction)."""
        if not 0 < level < 1:
            raise ValueError(f"interval level must lie in (0, 1), got {level}")
        return self._setting("level", level)

    def with_test_noise(self) -> AbstractContextManager[ResultsView]:
        """Widen the intervals over seeds by the test set's noise inside the block."""
        return self._setting("test_noise", True)

    @contextmanager
    def _setting(self, name: str, value: Any) -> Iterator[ResultsView]:
        saved = getattr(self, name)
        setattr(self, name, value)
        try:
            yield self
        finally:
            setattr(self, name, saved)

    def outputs(self, run: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The run's saved per-example outputs, or None (none saved, or file missing)."""
        name = run.get("predictions")
        folder = self.run_dirs.get((run.get("method"), run.get("task"), run.get("seed")))
        folder = folder or self.base_dir
        if not isinstance(name, str) or folder is None:
            return None
        path = folder / "runs" / Path(name).name
        key = str(path)  # not the name: runs of merged folders may share one
        if key not in self._outputs:
            try:
                with np.load(path) as z:
                    self._outputs[key] = {k: z[k] for k in z.files}
            except Exception:  # noqa: BLE001 - missing or damaged (zlib.error, BadZipFile, ...)
                self._outputs[key] = None
        return self._outputs[key]

    def unreadable_outputs(self) -> list[str]:
        """Runs (``method-task-seedN``) whose record names saved outputs that are missing or
        cannot be read (:meth:`outputs`): their statistics fall back as if none were saved."""
        if self.base_dir is None:
            return []
        return [
            f"{r.get('method')}-{r.get('task')}-seed{r.get('seed')}"
            for r in self.runs
            if isinstance(r.get("predictions"), str) and self.outputs(r) is None
        ]

    def has_outputs(self, task: str | None = None) -> bool:
        """True when some run (of ``task``) names saved per-example outputs that exist."""
        runs = [r for r in self.runs if task is None or r["task"] == task]
        return any(self.outputs(r) is not None for r in runs)

    def n_seeds(self, task: str | None = None) -> int:
        """Most seeds any method ran (on ``task``)."""
        counts = [len(v) for (t, _), v in self._by.items() if task is None or t == task]
        return max(counts, default=0)

    @staticmethod
    def convergence(run: dict[str, Any]) -> S.Convergence:
        """Convergence of one run from its per-epoch training loss (:func:`stats.convergence`)."""

        def floats(key: str) -> list[float] | None:
            xs = get_path(run, ("train_log", key))
            if not isinstance(xs, list):
                return None
            return [finite(x) if finite(x) is not None else math.nan for x in xs]

        losses = floats("loss")
        if losses is None:
            return S.Convergence(None, None)
        return S.convergence(losses, floats("kl"))

    def unconverged(self, task: str, method: str) -> bool:
        """True when some run of ``method`` on ``task`` failed the convergence criterion."""
        return any(self.convergence(r).converged is False for r in self.runs_for(task, method))

    # structure
    def task_order(self) -> tuple[str, ...]:
        """Tasks listed first, in this order, by :meth:`tasks` (none here: alphabetical)."""
        return ()

    def method_order(self) -> tuple[str, ...]:
        """Methods listed first, in this order, by :meth:`methods` (none here: alphabetical)."""
        return ()

    def tasks(self, kind: str | None = None) -> list[str]:
        """Tasks that ran, in :meth:`task_order` then alphabetical; optionally of one kind."""
        names = {r["task"] for r in self.runs}
        first = self.task_order()
        ordered = [t for t in first if t in names] + sorted(names - set(first))
        return [t for t in ordered if kind is None or self.kind(t) == kind]

    def methods(self, task: str | None = None) -> list[str]:
        """Methods that ran (on ``task``), in :meth:`method_order` then alphabetical."""
        names = {r["method"] for r in self.runs if task is None or r["task"] == task}
        first = self.method_order()
        return [m for m in first if m in names] + sorted(names - set(first))

    def runs_for(self, task: str, method: str) -> list[dict[str, Any]]:
        """The runs of ``method`` on ``task``, by seed."""
        return self._by.get((task, method), [])

    def kind(self, task: str) -> str | None:
        """ "classification" or "regression", from the metrics the task's runs hold."""
        for r in self.runs:
            if r["task"] == task and isinstance(r.get("metrics"), dict):
                if "error_pct" in r["metrics"]:
                    return "classification"
                if "bands" in r["metrics"] or "rmse" in r["metrics"]:
                    return "regression"
        return None

    def display_name(self, method: str) -> str:
        """The display name the method's runs recorded, else the method's registry name."""
        for r in self.runs:
            if r["method"] == method and r.get("display_name"):
                return str(r["display_name"])
        return method

    def n_classes(self, task: str) -> int | None:
        """Number of classes of a classification ``task`` (None when it cannot be told)."""
        for r in self.runs:
            if r["task"] == task:
                k = get_path(r, ("config", "spec", "out_dim"))
                if isinstance(k, int) and k > 1:
                    return k
                g = get_path(r, ("metrics", "in_entropy_ecdf", "grid"))
                if isinstance(g, list) and g and finite(g[-1]):
                    return round(math.exp(g[-1]))
        return None

    def ood_sets(self, task: str) -> list[str]:
        """The OOD sets the runs of ``task`` were evaluated on, in the order first seen."""
        names: dict[str, None] = {}
        for r in self.runs:
            if r["task"] == task:
                for name in get_path(r, ("metrics", "ood")) or {}:
                    names[name] = None
        return list(names)

    def ood_set(self, task: str) -> str | None:
        """The OOD set the paper's claims are about (notMNIST / the hidden classes)."""
        sets = self.ood_sets(task)
        for hint in ("notmnist", "hidden"):
            for s in sets:
                if hint in s.lower():
                    return s
        return sets[0] if sets else None

    # values
    def values(self, task: str, method: str, *path: str) -> list[float]:
        """Finite ``metrics[path]`` of each seed."""
        out = [finite(get_path(r.get("metrics"), path)) for r in self.runs_for(task, method)]
        return [x for x in out if x is not None]

    def scalar(self, task: str, method: str, *path: str) -> float | None:
        """Mean over seeds of ``metrics[path]``."""
        vals = self.values(task, method, *path)
        return float(np.mean(vals)) if vals else None

    def mean_std(self, task: str, method: str, *path: str) -> tuple[float, float | None, int]:
        """Mean, sample std (None for one seed) and count of ``metrics[path]`` over seeds."""
        vals = self.values(task, method, *path)
        if not vals:
            return math.nan, None, 0
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        return float(np.mean(vals)), std, len(vals)

    def curve(self, task: str, method: str, *path: str) -> np.ndarray | None:
        """``metrics[path]`` as an array, averaged over the seeds whose arrays have one length."""
        arrays = []
        for r in self.runs_for(task, method):
            a = get_path(r.get("metrics"), path)
            if isinstance(a, list) and a and all(finite(x) is not None for x in a):
                arrays.append(np.asarray(a, dtype=float))
        if not arrays:
            return None
        same = [a for a in arrays if len(a) == len(arrays[0])]
        return np.mean(same, axis=0)

    def reliability(self, task: str, method: str) -> dict[str, np.ndarray] | None:
        """Reliability data pooled over seeds (counts summed, bin means count-weighted)."""
        total = conf = acc = None
        lower = upper = None
        for r in self.runs_for(task, method):
            rel = get_path(r.get("metrics"), ("reliability",))
            if not isinstance(rel, dict) or not rel.get("count"):
                continue
            n = np.asarray(rel["count"], dtype=float)
            c = np.array([x if x is not None else 0.0 for x in rel["confidence"]], dtype=float)
            a = np.array([x if x is not None else 0.0 for x in rel["accuracy"]], dtype=float)
            if total is None:
                total, conf, acc = n.copy(), c * n, a * n
                lower = np.asarray(rel["bin_lower"], dtype=float)
                upper = np.asarray(rel["bin_upper"], dtype=float)
            elif len(n) == len(total):
                total, conf, acc = total + n, conf + c * n, acc + a * n
        if total is None:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            return {
                "lower": lower,
                "upper": upper,
                "count": total,
                "confidence": np.where(total > 0, conf / total, np.nan),
                "accuracy": np.where(total > 0, acc / total, np.nan),
            }

    # provenance
    def verified(self, task: str) -> bool:
        """True when every run of ``task`` says its data matched the published checksums."""
        runs = [r for r in self.runs if r["task"] == task]
        return bool(runs) and all(get_path(r, ("data", "verified")) is True for r in runs)
