"""CI regression check: compare a results file with a committed reference.

For each (method, task) of the reference, every checked metric is averaged over the
reference's seeds (in both files) and compared in the metric's own direction:

* lower is better: ``error_pct``, ``nll``, ``brier``, ``ece``, ``ood.<set>.fpr95``, ``rmse``
  -- the current value may not rise above ``reference + tolerance``;
* higher is better: ``ood.<set>.auroc``, ``fgsm.accuracy_mean``, ``loglik_inside``,
  ``loglik_outside`` -- the current value may not fall below ``reference - tolerance``.

FGSM is checked as one number, the mean accuracy over the eps grid (an area under the
accuracy-vs-eps curve): a single row that is far less noisy than accuracy at each eps, whose
large-eps values sit near chance. The eps grid itself must match the reference; a different
grid makes the metric "missing", since the two means would not measure the same thing.

Metric paths are the keys of the tolerance file: ``error_pct``, ``ood.notmnist.auroc``,
``fgsm.accuracy_mean``, ``loglik_outside``. Tolerances are looked up in
``per_run["<method>/<task>"][path]``, then ``default[path]``, then ``default[kind]`` where
the kind of ``ood.<set>.auroc`` is ``auroc`` (and of ``ood.<set>.fpr95`` is ``fpr95``); every
other path is its own kind.

Only metrics the reference holds (even as null) are checked: null in both is skipped, null in
one of the two is "missing". Metrics that only the current results have (a new OOD set, say)
are not checked until the reference is refreshed. Status of a row: "regressed" (worse than
the tolerance allows), "improved" (better than the reference by more than the tolerance: a
hint to refresh it), "ok" (within the tolerance), "missing".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uqbench.errors import ResultsError
from uqbench.results import (  # noqa: F401 - re-exported
    RESULTS_SCHEMA,
    read_json,
    resolve_results_path,
    validate_results,
)

TOLERANCES_SCHEMA = "uqbench.tolerances/1"

# Scalar metrics at the top level of METRICS, with True when higher is better.
SCALAR_METRICS: dict[str, bool] = {
    "error_pct": False,
    "nll": False,
    "brier": False,
    "ece": False,
    "rmse": False,
    "loglik_inside": True,
    "loglik_outside": True,
}
# Metrics of each OOD set, with True when higher is better.
OOD_METRICS: dict[str, bool] = {"auroc": True, "fpr95": False}
FGSM_PATH = "fgsm.accuracy_mean"
# Beyond the paper (issue 18): checked only where the reference run has them, so references
# made before they existed still check cleanly.
SCALAR_METRICS.update(
    {"aurc": False, "rotated_accuracy_mean": True, "corrupted_accuracy_mean": True}
)
OOD_EXTRA_METRICS: dict[str, bool] = {
    "auroc_mutual_info": True,
    "auroc_expected_entropy": True,
    "aupr_in": True,
    "aupr_out": True,
}

# A row is "moved" (shown in the table) when |delta| exceeds this, relative to the reference.
MOVE_EPS = 1e-9

STATUSES = ("ok", "improved", "regressed", "missing")


@dataclass
class CheckRow:
    """One compared metric of one (method, task); values are means over the reference's seeds."""

    method: str
    task: str
    metric: str
    reference: float | None
    current: float | None
    delta: float | None  # current - reference
    tolerance: float | None
    status: str  # one of STATUSES
    note: str = ""

    @property
    def moved(self) -> bool:
        """Whether the value changed by more than a tiny epsilon (or could not be compared)."""
        if self.delta is None or not math.isfinite(self.delta):
            return self.reference != self.current
        scale = max(1.0, abs(self.reference or 0.0))
        return abs(self.delta) > MOVE_EPS * scale


@dataclass
class CheckReport:
    """Outcome of :func:`check_results`: one row per compared metric, in reference order."""

    suite: str
    rows: list[CheckRow] = field(default_factory=list)
    n_runs: int = 0  # (method, task, seed) runs of the reference

    @property
    def passed(self) -> bool:
        """True when no metric regressed and none is missing."""
        return not any(r.status in ("regressed", "missing") for r in self.rows)

    def count(self, status: str) -> int:
        """Number of rows with ``status``."""
        return sum(r.status == status for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, e.g. for a CI artefact."""
        return {
            "suite": self.suite,
            "passed": self.passed,
            "n_runs": self.n_runs,
            "rows": [asdict(r) for r in self.rows],
        }


# --------------------------------------------------------------------------- validation


def _index_runs(results: dict, what: str) -> dict[tuple[str, str, int], dict]:
    """Map (method, task, seed) to its run; refuse duplicate or malformed runs."""
    index: dict[tuple[str, str, int], dict] = {}
    for i, run in enumerate(results["runs"]):
        try:
            key = (str(run["method"]), str(run["task"]), int(run["seed"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultsError(f"{what}: run #{i} lacks method, task or seed ({exc})") from None
        if key in index:
            raise ResultsError(f"{what}: run {run_name(key)} appears more than once")
        if not isinstance(run.get("metrics"), dict):
            raise ResultsError(f"{what}: run {run_name(key)} has no 'metrics' object")
        index[key] = run
    return index


def run_name(key: tuple[str, str, int]) -> str:
    """``method/task/seedK``: how messages name a run."""
    return f"{key[0]}/{key[1]}/seed{key[2]}"


# --------------------------------------------------------------------------- metric extraction


def _num(x: Any) -> float | None:
    """A metric value as float, None when null/absent."""
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise ResultsError(f"metric value {x!r} is not a number")
    return float(x)


def metric_direction(path: str) -> bool:
    """True when higher is better for metric ``path``."""
    if path == FGSM_PATH:
        return True
    if path.startswith("ood."):
        return {**OOD_METRICS, **OOD_EXTRA_METRICS}[path.rsplit(".", 1)[1]]
    return SCALAR_METRICS[path]


def metric_kind(path: str) -> str:
    """Generic name of a metric path: ``ood.<set>.auroc`` -> ``auroc``; others unchanged."""
    if path.startswith("ood."):
        return path.rsplit(".", 1)[1]
    return path


def run_metric_paths(metrics: dict) -> list[str]:
    """Checked metric paths that ``metrics`` holds (a key present with a null value counts)."""
    paths = [name for name in SCALAR_METRICS if name in metrics]
    ood = metrics.get("ood")
    if isinstance(ood, dict):
        for ood_set in ood:
            paths += [f"ood.{ood_set}.{m}" for m in OOD_METRICS]
            paths += [f"ood.{ood_set}.{m}" for m in OOD_EXTRA_METRICS if m in (ood[ood_set] or {})]
    if "fgsm" in metrics:
        paths.append(FGSM_PATH)
    return paths


def extract_metric(metrics: dict, path: str) -> tuple[float | None, tuple[float, ...] | None]:
    """Value of ``path`` in one run's metrics (None when null/absent).

    The second item is the FGSM eps grid for ``fgsm.accuracy_mean`` (None otherwise), so that
    callers can refuse to average or compare means over different grids.
    """
    if path == FGSM_PATH:
        fgsm = metrics.get("fgsm")
        if fgsm is None:
            return None, None
        acc = [_num(a) for a in fgsm.get("accuracy") or []]
        eps = tuple(float(e) for e in fgsm.get("eps") or [])
        if not acc or any(a is None for a in acc):
            return None, eps
        if len(acc) != len(eps):
            raise ResultsError(f"fgsm has {len(eps)} eps values but {len(acc)} accuracies")
        return sum(acc) / len(acc), eps
    if path.startswith("ood."):
        _, ood_set, name = path.split(".", 2)
        entry = (metrics.get("ood") or {}).get(ood_set)
        return (None if entry is None else _num(entry.get(name))), None
    return _num(metrics.get(path)), None


@dataclass
class Aggregate:
    """Seed-mean of one metric; ``value`` None when null in any seed."""

    value: float | None
    eps: tuple[float, ...] | None = None
    note: str = ""


def aggregate_run_metrics(runs: list[dict], paths: list[str]) -> dict[str, Aggregate]:
    """Mean over ``runs`` (the seeds of one (method, task)) of each metric in ``paths``.

    A metric null in some seeds but not others aggregates to None with a note, and so does an
    FGSM metric whose eps grid differs between seeds.
    """
    out: dict[str, Aggregate] = {}
    for path in paths:
        vals, grids = [], set()
        for run in runs:
            v, eps = extract_metric(run["metrics"], path)
            vals.append(v)
            if eps is not None:
                grids.add(eps)
        present = [v for v in vals if v is not None]
        eps = next(iter(grids)) if len(grids) == 1 else None
        if len(grids) > 1:
            out[path] = Aggregate(None, None, "fgsm eps grid differs between seeds")
        elif not present:
            out[path] = Aggregate(None, eps)
        elif len(present) < len(vals):
            n_null = len(vals) - len(present)
            out[path] = Aggregate(None, eps, f"null in {n_null} of {len(vals)} seeds")
        else:
            out[path] = Aggregate(sum(present) / len(present), eps)
    return out


def group_runs(results: dict, what: str = "results") -> dict[tuple[str, str], dict[int, dict]]:
    """Runs of a validated results dict grouped as {(method, task): {seed: run}}."""
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for (method, task, seed), run in _index_runs(results, what).items():
        groups.setdefault((method, task), {})[seed] = run
    return groups


# --------------------------------------------------------------------------- tolerances


def load_tolerances(path: Path | str) -> dict:
    """Read and validate a tolerance file (schema ``uqbench.tolerances/1``)."""
    tol = read_json(Path(path), "tolerance file")
    validate_tolerances(tol, str(path))
    return tol


def validate_tolerances(tol: dict, what: str = "tolerances") -> None:
    """Refuse a tolerance dict of another schema or with a bad value."""
    if not isinstance(tol, dict) or tol.get("schema") != TOLERANCES_SCHEMA:
        got = tol.get("schema") if isinstance(tol, dict) else type(tol).__name__
        raise ResultsError(f"{what} has schema {got!r}; expected {TOLERANCES_SCHEMA!r}")
    default = tol.get("default", {})
    per_run = tol.get("per_run", {})
    if not isinstance(default, dict) or not isinstance(per_run, dict):
        raise ResultsError(f"{what}: 'default' and 'per_run' must be objects")
    tables = [("default", default)] + [(f"per_run[{k!r}]", v) for k, v in per_run.items()]
    for name, table in tables:
        if not isinstance(table, dict):
            raise ResultsError(f"{what}: {name} must be an object of metric -> tolerance")
        for metric, value in table.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ResultsError(
                    f"{what}: {name}[{metric!r}] = {value!r} is not a finite number >= 0"
                )


def lookup_tolerance(tolerances: dict, method: str, task: str, path: str) -> float | None:
    """Tolerance of ``path`` for (method, task): per-run entry, else default by path or kind."""
    per = tolerances.get("per_run", {}).get(f"{method}/{task}", {})
    if path in per:
        return float(per[path])
    default = tolerances.get("default", {})
    for key in (path, metric_kind(path)):
        if key in default:
            return float(default[key])
    return None


# --------------------------------------------------------------------------- the check


def _compare(
    method: str,
    task: str,
    path: str,
    ref: Aggregate,
    cur: Aggregate,
    tolerances: dict,
) -> CheckRow | None:
    tol = lookup_tolerance(tolerances, method, task, path)
    row = CheckRow(method, task, path, ref.value, cur.value, None, tol, "missing")
    if ref.value is None and cur.value is None and not (ref.note or cur.note):
        return None  # null in both (e.g. fgsm of the ensemble): nothing to compare
    if ref.value is None or cur.value is None:
        side = "reference" if ref.value is None else "current"
        note = (ref.note if ref.value is None else cur.note) or "null"
        row.note = f"missing metric: {side} {note}"
        return row
    if path == FGSM_PATH and ref.eps != cur.eps:
        row.note = f"fgsm eps grid differs: reference {list(ref.eps)}, current {list(cur.eps)}"
        return row
    if tol is None:
        raise ResultsError(
            f"no tolerance for metric {path!r} of {method}/{task}: add it to the tolerance "
            f"file's per_run[{method + '/' + task!r}] or default"
        )
    row.delta = cur.value - ref.value
    if not (math.isfinite(ref.value) and math.isfinite(cur.value)):
        same = ref.value == cur.value
        row.status = "ok" if same else "regressed"
        row.note = "" if same else "value not finite"
        return row
    worse = -row.delta if metric_direction(path) else row.delta
    slack = 1e-12 * max(1.0, abs(ref.value))  # float noise in the sum that made the mean
    if worse > tol + slack:
        row.status = "regressed"
    elif -worse > tol + slack:
        row.status = "improved"
    else:
        row.status = "ok"
    return row


def check_results(results: dict, reference: dict, tolerances: dict) -> CheckReport:
    """Compare ``results`` with ``reference`` metric by metric within ``tolerances``.

    Both dicts follow schema ``uqbench.results/1``. Raises ResultsError when the results are
    of another schema or suite than the reference, or lack a (method, task, seed) run of the
    reference. Seeds of the results that the reference lacks are ignored, so that both means
    are over the same seeds (the tolerances are derived for that mean).
    """
    validate_results(reference, "reference")
    validate_results(results, "results")
    validate_tolerances(tolerances)
    suite = reference.get("suite")
    if results.get("suite") != suite:
        raise ResultsError(
            f"results are of suite {results.get('suite')!r} but the reference is of suite "
            f"{suite!r}: run `uqbench run --suite {suite}` or pick the matching reference"
        )
    tol_suite = tolerances.get("suite")
    if tol_suite is not None and tol_suite != suite:
        raise ResultsError(f"tolerances are for suite {tol_suite!r}, not {suite!r}")

    ref_index = _index_runs(reference, "reference")
    cur_index = _index_runs(results, "results")
    absent = [key for key in ref_index if key not in cur_index]
    if absent:
        names = ", ".join(run_name(k) for k in absent)
        raise ResultsError(
            f"results lack {len(absent)} run(s) of the reference (method/task/seed): {names}"
        )

    report = CheckReport(suite=str(suite), n_runs=len(ref_index))
    groups: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for key in ref_index:
        groups.setdefault(key[:2], []).append(key)
    for (method, task), keys in groups.items():
        ref_runs = [ref_index[k] for k in keys]
        cur_runs = [cur_index[k] for k in keys]
        paths: list[str] = []
        for run in ref_runs:
            paths += [p for p in run_metric_paths(run["metrics"]) if p not in paths]
        ref_agg = aggregate_run_metrics(ref_runs, paths)
        cur_agg = aggregate_run_metrics(cur_runs, paths)
        for path in paths:
            row = _compare(method, task, path, ref_agg[path], cur_agg[path], tolerances)
            if row is not None:
                report.rows.append(row)
    return report


# --------------------------------------------------------------------------- output


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def format_check_table(report: CheckReport) -> str:
    """Rows that moved (beyond a tiny epsilon) or regressed/are missing, then a summary line."""
    shown = [r for r in report.rows if r.moved or r.status in ("regressed", "missing")]
    header = ("method", "task", "metric", "reference", "current", "delta", "tolerance", "status")
    cells = [
        (
            r.method,
            r.task,
            r.metric,
            _fmt(r.reference),
            _fmt(r.current),
            _fmt(r.delta, signed=True),
            _fmt(r.tolerance),
            r.status.upper() if r.status in ("regressed", "missing") else r.status,
            r.note,
        )
        for r in shown
    ]
    lines = []
    if cells:
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        for c in cells:
            text = "  ".join(v.ljust(w) for v, w in zip(c[:-1], widths, strict=True))
            lines.append((text + ("  " + c[-1] if c[-1] else "")).rstrip())
    else:
        lines.append("(no metric moved)")
    verdict = "PASSED" if report.passed else "FAILED"
    counts = ", ".join(f"{report.count(s)} {s}" for s in ("regressed", "missing", "improved", "ok"))
    lines.append(
        f"check {verdict}: suite {report.suite!r}, {len(report.rows)} metrics of "
        f"{report.n_runs} runs compared with the reference: {counts}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def default_tolerance_path(reference_path: Path) -> Path:
    """``<reference stem>-tolerances.json`` beside the reference file."""
    return reference_path.with_name(f"{reference_path.stem}-tolerances.json")


def run_check(
    results_path: Path, reference_path: Path, tolerance_path: Path | None = None
) -> tuple[str, bool]:
    """Load the three files, check, and return (table text, passed).

    ``results_path`` and ``reference_path`` may each be a results.json or a directory holding
    one. Without ``tolerance_path``, ``<reference stem>-tolerances.json`` beside the reference
    is used; ResultsError when it does not exist.
    """
    results_file = resolve_results_path(Path(results_path))
    reference_file = resolve_results_path(Path(reference_path))
    if tolerance_path is None:
        tolerance_path = default_tolerance_path(reference_file)
        if not tolerance_path.is_file():
            raise ResultsError(
                f"no tolerance file given and none at {tolerance_path}; derive one with "
                "`python -m uqbench.tolerances OUT.json RESULTS1.json RESULTS2.json ...`"
            )
    report = check_results(
        read_json(results_file, "results file"),
        read_json(reference_file, "reference file"),
        load_tolerances(tolerance_path),
    )
    return format_check_table(report), report.passed
