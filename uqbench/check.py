"""CI regression check: compare a results file with a committed reference.

For each (method, task) of the reference, every checked metric (a metric whose declaration in
:mod:`uqbench.metric_catalog` has a tolerance floor) is averaged over the reference's seeds (in
both files) and compared in the metric's own direction, as declared:

* lower is better, for example ``error_pct``, ``nll``, ``brier``, ``ece``,
  ``ood.<set>.fpr95``, ``rmse`` -- the current value may not rise above
  ``reference + tolerance``;
* higher is better, for example ``ood.<set>.auroc``, ``fgsm.accuracy_mean``,
  ``loglik_inside``, ``loglik_outside``, ``coverage_3std_inside``, ``coverage_3std_outside``,
  ``test_mutual_info_mean`` (the epistemic part of the test predictive) and MNF's
  ``q_layers.z_spread_rel`` (mean over layers of the q(z) diagnostic) -- the current value
  may not fall below ``reference - tolerance``;
* neither, ``fgsm.budget_share`` (the share of the eps budget the attack spent: clipping to the
  input range keeps it below 1) -- the current value may not move beyond the tolerance
  either way, and the row's direction is "either".

FGSM's accuracy is checked as one number, the mean accuracy over the eps grid (an area under
the accuracy-vs-eps curve): a single row that is far less noisy than accuracy at each eps,
whose large-eps values sit near chance. The eps grid itself must match the reference; a
different grid makes every FGSM summary (this one, ``fgsm.budget_share``) "missing", since
the two would not measure the same thing.

The data are checked too, in one row per (method, task) named ``data.class_counts`` with
direction "equal" and no value or tolerance: every labelled split (train, test, each OOD set
that gives labels) must hold as many inputs of each class as the reference's, or the row is
"regressed" naming the splits that differ ("missing" when the results record no counts). With
the reference's seeds each run is compared with the same seed's; with any seeds, only the
splits whose counts agree over all reference seeds (stratified subsets: all built-in ones).

Metric paths are the keys of the tolerance file: ``error_pct``, ``ood.notmnist.auroc``,
``fgsm.accuracy_mean``, ``loglik_outside``. Tolerances are looked up in
``per_run["<method>/<task>"][path]``, then ``default[path]``, then ``default[kind]`` where
the kind of ``ood.<set>.auroc`` is ``auroc`` (and of ``ood.<set>.fpr95`` is ``fpr95``); every
other path is its own kind.

Only metrics the reference holds (even as null) are checked: null in both is skipped, null in
one of the two is "missing". Metrics that only the current results have (a new OOD set, say)
are not checked until the reference is refreshed. Status of a row: "regressed" (worse than
the tolerance allows), "improved" (better than the reference by more than the tolerance: a
hint to refresh it), "ok" (within the tolerance), "missing", "unchecked" (the tolerance
file's ``unchecked["<method>/<task>"]`` lists the metric with its reason: too noisy over
seeds to check at a useful tolerance, measured in one repeat only, or of a task left to the
tripwire; shown, never failing).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from uqbench import metric_catalog as catalog
from uqbench.errors import ResultsError
from uqbench.results import (  # noqa: F401 - re-exported
    RESULTS_SCHEMA,
    read_json,
    resolve_results_path,
    validate_results,
    validate_runs,
)

TOLERANCES_SCHEMA = "uqbench.tolerances/1"
#: A tolerance file derived against the mean of its repeats (``"reference": "mean of the
#: repeats"``): version 2, so that a uqbench that predates it, which would hold it against
#: one reference run (too tight), refuses it instead.
TOLERANCES_SCHEMA_MEAN = "uqbench.tolerances/2"

# What is checked, and in which direction, comes from the metric declarations
# (uqbench.metric_catalog): every metric with a tolerance floor, in declaration order
# (run_metric_paths); per-OOD-set metrics not marked ``required`` only where the reference
# run has them, so references made before they existed still check cleanly.
(FGSM_PATH,) = (m.name for m in catalog.metrics("fgsm", checked=True))

# A row is "moved" (shown in the table) when |delta| exceeds this, relative to the reference.
MOVE_EPS = 1e-9

# "unchecked": the tolerance file lists the metric as not checkable (its reason is the note).
STATUSES = ("ok", "improved", "regressed", "missing", "unchecked")

REFRESH_HINT = (
    "a deliberate change lands only with a regenerated reference and a note saying why: "
    "see results/reference/README.md"
)


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
    # "lower", "higher" (which way is better), "either" (both checked) or "equal" (the class
    # counts: no value, no tolerance; the note says what differs)
    direction: str = ""

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
    two_sided: bool = False  # an "improved" row fails the check too
    seeds: str = "same"  # "same": the reference's seeds; "any": whatever seeds each side has
    tasks: list[str] | None = None  # the tasks compared (``--tasks``); None: every task

    @property
    def failing(self) -> tuple[str, ...]:
        """Statuses that make the check fail."""
        return ("regressed", "missing", "improved") if self.two_sided else ("regressed", "missing")

    @property
    def passed(self) -> bool:
        """True when no row has a failing status (see :attr:`failing`)."""
        return not any(r.status in self.failing for r in self.rows)

    def count(self, status: str) -> int:
        """Number of rows with ``status``."""
        return sum(r.status == status for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, e.g. for a CI artefact."""
        return {
            "mode": "tolerance",
            "suite": self.suite,
            "passed": self.passed,
            "two_sided": self.two_sided,
            "seeds": self.seeds,
            "tasks": self.tasks,
            "n_runs": self.n_runs,
            "counts": {s: self.count(s) for s in STATUSES},
            "rows": [asdict(r) for r in self.rows],
        }


# --------------------------------------------------------------------------- validation


def _index_runs(
    results: dict, what: str, *, bounds: bool = False
) -> dict[tuple[str, str, int], dict]:
    """Map (method, task, seed) to its run; refuse duplicate or malformed runs (``bounds``:
    also metrics outside the values they can take)."""
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
        # Bounds only where results are read (validate_comparable): check_results also
        # compares values moved past them, to test a metric's direction.
        validate_metrics(run["metrics"], f"{what}: run {run_name(key)}", bounds=bounds)
        index[key] = run
    return index


def validate_comparable(results: dict, what: str = "results") -> None:
    """Refuse a merged results dict whose runs cannot be compared as they stand, naming the
    run: one (method, task, seed) twice, a run not ``ok``, metrics missing, malformed or
    non-finite, runs of one task made from different copies of a data set (:func:`data_mismatch`),
    or runs of one (method, task) made with other settings or by other code
    (the merge never writes such a file; a hand-edited or hand-merged one can hold it, and
    a report would average it silently)."""
    if not isinstance(results.get("runs"), list):
        raise ResultsError(f"{what} has no 'runs' list; is this a merged results.json?")
    validate_runs(results["runs"], what)
    for i, run in enumerate(results["runs"]):
        if isinstance(run, dict) and run.get("status", "ok") != "ok":
            raise ResultsError(
                f"{what}: run #{i} ({run.get('method')}/{run.get('task')}/seed{run.get('seed')}) "
                f"has status {run.get('status')!r}; a merged results file lists failed runs "
                "under 'failed', not 'runs'"
            )
    made: dict[tuple[str, str], tuple[tuple[str, str, int], dict[str, Any]]] = {}
    versions: dict[tuple[str, str], tuple[tuple[str, str, int], Any]] = {}
    seen_data: dict[tuple[str, str], tuple[tuple[str, str, int], DataCopy]] = {}
    for key, run in _index_runs(results, what, bounds=True).items():
        for dataset, copy in data_identity(data_files(run)).items():  # one copy per task
            first_key, first = seen_data.setdefault((key[1], dataset), (key, copy))
            differ = data_mismatch({dataset: copy}, {dataset: first})
            if differ:
                raise ResultsError(
                    f"{what}: runs {run_name(key)} and {run_name(first_key)} were made from "
                    f"different copies of {differ}; the runs of one task must be made from the "
                    "same data (`uqbench run` makes again, or leaves out, the runs whose data "
                    "files changed)"
                )
        config = run.get("config") if isinstance(run.get("config"), dict) else {}
        cfg = _flat({s: config.get(s) for s in SETTING_SECTIONS if s in config})
        first = made.setdefault(key[:2], (key, cfg))
        differ = [k for k in sorted(set(cfg) & set(first[1])) if cfg[k] != first[1][k]]
        if differ:
            k = differ[0]
            raise ResultsError(
                f"{what}: run {run_name(key)} was made with {k} {cfg[k]!r}, run "
                f"{run_name(first[0])} with {first[1][k]!r}; the seeds of one method and task "
                "must differ by their seeds only"
            )
        version = run.get("code_version")
        if version is None:  # made before code versions were recorded: as the merge
            continue
        seen = versions.setdefault(key[:2], (key, version))
        if version != seen[1]:
            raise ResultsError(
                f"{what}: run {run_name(key)} was made by code version {version}, run "
                f"{run_name(seen[0])} by {seen[1]}; the seeds of one method and task must "
                "come from the same code"
            )


#: A data set's copy as runs record it: its files' ``(name, md5)`` pairs, and whether every
#: one matched its published checksum.
DataCopy = tuple[frozenset[tuple[str, str]], bool]


def data_identity(files: Iterable[Any]) -> dict[str, DataCopy]:
    """``{dataset: (content's (name, md5) pairs, all verified)}`` of data-file records (those
    with ``dataset``, ``file`` and ``md5`` strings; others are skipped). The pairs do not
    depend on how a copy is stored (:func:`uqbench.data.checksums.content_pairs`); a record
    is verified when it says so and its md5 is the one it was checked against."""
    from uqbench.data.checksums import content_pairs  # the data package imports torch

    out: dict[str, tuple[set[tuple[str, str]], bool]] = {}
    for f in filter(_is_file_record, files):
        names, verified = out.setdefault(f["dataset"], (set(), True))
        names.update(content_pairs(f["dataset"], f["file"], f["md5"]))
        checked = f.get("verified") is True and f.get("expected_md5") == f["md5"]
        out[f["dataset"]] = (names, verified and checked)
    return {k: (frozenset(v[0]), v[1]) for k, v in out.items()}


def data_mismatch(a: dict[str, DataCopy], b: dict[str, DataCopy]) -> str | None:
    """How two copies of the data sets both name differ (None: they do not). Two copies are
    the same when their files and md5s are, or when both match the published checksums (the
    upstream content stored as a tarball or a folder, compressed or not)."""
    for dataset in sorted(set(a) & set(b)):
        (files_a, verified_a), (files_b, verified_b) = a[dataset], b[dataset]
        if files_a == files_b or (verified_a and verified_b):
            continue

        def show(files: frozenset[tuple[str, str]], verified: bool) -> str:
            named = sorted(files)
            more = f" and {len(named) - 2} more" if len(named) > 2 else ""
            listed = ", ".join(f"{n} md5 {m}" for n, m in named[:2])
            return f"{listed}{more}{'' if verified else ', unverified'}"

        return f"{dataset} ({show(files_a, verified_a)}; against {show(files_b, verified_b)})"
    return None


def _is_file_record(f: Any) -> bool:
    """Whether ``f`` is a data-file record with ``dataset``, ``file`` and ``md5`` strings."""
    return isinstance(f, dict) and all(
        isinstance(f.get(k), str) for k in ("dataset", "file", "md5")
    )


def data_files(run: dict) -> list[dict[str, str]]:
    """The data files a run records with an md5 (``data.files``; none in older runs)."""
    data = run.get("data") if isinstance(run.get("data"), dict) else {}
    return list(
        filter(_is_file_record, data.get("files") if isinstance(data.get("files"), list) else [])
    )


def validate_metrics(metrics: dict, where: str, *, bounds: bool = True) -> None:
    """Refuse metrics of the catalogue that are malformed, not numbers, not finite or outside
    the values they can take, naming them (absent or null ones are allowed: not every run
    has every metric)."""
    for name in ("ood", "fgsm"):
        value = metrics.get(name)
        if value is not None and not isinstance(value, dict):
            raise ResultsError(
                f"{where}: metrics.{name} is a {type(value).__name__}, expected an object (or null)"
            )
    for ood_set, entry in (metrics.get("ood") or {}).items():
        if entry is not None and not isinstance(entry, dict):
            raise ResultsError(
                f"{where}: metrics.ood.{ood_set} is a {type(entry).__name__}, expected an object"
            )
    for path in run_metric_paths(metrics, checked=False):  # every one a table may show
        try:
            value, _ = extract_metric(metrics, path)
        except ResultsError as exc:
            raise ResultsError(f"{where}: metric {path}: {exc}") from None
        except (TypeError, ValueError) as exc:  # e.g. a scalar or strings where lists go
            raise ResultsError(f"{where}: metric {path} is malformed ({exc})") from None
        if value is not None and not math.isfinite(value):
            raise ResultsError(
                f"{where}: metric {path} is {value}; a non-finite metric means a broken run, "
                "not a measurement to compare"
            )
        lo, hi = catalog.metric(metric_kind(path)).bounds if bounds else (None, None)
        slack = 1e-6 * max(1.0, abs(value or 0.0))  # float32 rounding at a bound (a share 1)
        if value is not None and (
            (lo is not None and value < lo - slack) or (hi is not None and value > hi + slack)
        ):
            span = f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
            raise ResultsError(
                f"{where}: metric {path} is {value!r}, outside the values it can take {span}; "
                "not a measurement to compare"
            )


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


def metric_direction(path: str) -> str:
    """Which way is better for metric ``path``: "higher", "lower" or "either" (a metric with
    no better value, checked both ways)."""
    return catalog.metric(metric_kind(path)).direction


def metric_kind(path: str) -> str:
    """Generic name of a metric path: ``ood.<set>.auroc`` -> ``auroc``; others unchanged."""
    if path.startswith("ood."):
        return path.rsplit(".", 1)[1]
    return path


def run_metric_paths(metrics: dict, checked: bool = True) -> list[str]:
    """Checked metric paths that ``metrics`` holds (a key present with a null value counts);
    with ``checked=False``, those of every metric of the catalogue."""
    only = True if checked else None
    paths = [m.name for m in catalog.metrics("run", checked=only) if _holds(metrics, m.path)]
    ood = metrics.get("ood")
    if isinstance(ood, dict):
        for ood_set in ood:
            for m in catalog.metrics("ood", checked=only):
                if m.required or _holds(ood[ood_set] or {}, m.path):
                    paths.append(f"ood.{ood_set}.{m.name}")
    if "fgsm" in metrics:
        paths.append(FGSM_PATH)
    q_layers = _q_layers(metrics)
    for m in catalog.metrics("q_layers", checked=only):
        if q_layers and all(m.path[-1] in q for q in q_layers):
            paths.append(m.name)
    return paths


def _q_layers(metrics: dict) -> list[dict]:
    """The per-layer q diagnostics of a run (``diagnostics.q_layers``), [] when absent."""
    diagnostics = metrics.get("diagnostics")
    q = diagnostics.get("q_layers") if isinstance(diagnostics, dict) else None
    return [v for v in q.values() if isinstance(v, dict)] if isinstance(q, dict) else []


def extract_metric(metrics: dict, path: str) -> tuple[float | None, tuple[float, ...] | None]:
    """Value of ``path`` in one run's metrics (None when null/absent).

    The second item is the FGSM eps grid for a metric summarising the FGSM curves
    (``fgsm.accuracy_mean``, ``fgsm.budget_share``; None otherwise), so that callers can
    refuse to average or compare summaries over different grids.
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
        return (None if entry is None else _num(_at(entry, catalog.metric(name).path))), None
    if path.startswith("q_layers."):
        key = catalog.metric(path).path[-1]
        values = [_num(q.get(key)) for q in _q_layers(metrics)]
        if not values or any(v is None for v in values):
            return None, None
        return sum(values) / len(values), None
    m_path = catalog.metric(path).path
    value = _num(_at(metrics, m_path))
    if m_path[0] == "fgsm":  # a summary over the eps grid: means over other grids differ
        return value, tuple(float(e) for e in (metrics.get("fgsm") or {}).get("eps") or [])
    return value, None


def _at(d: dict, path: tuple[str, ...]) -> Any:
    """``d[path[0]][path[1]]...``; None where a level is missing or null."""
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _holds(d: dict, path: tuple[str, ...]) -> bool:
    """Whether ``d`` holds the key at ``path`` (even with a null value)."""
    *parents, last = path
    parent = _at(d, tuple(parents))
    return isinstance(parent, dict) and last in parent


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
    """Read and validate a tolerance file (schema ``uqbench.tolerances/1`` or ``/2``)."""
    tol = read_json(Path(path), "tolerance file")
    validate_tolerances(tol, str(path))
    return tol


def validate_tolerances(tol: dict, what: str = "tolerances") -> None:
    """Refuse a tolerance dict of another schema or with a bad value."""
    schemas = (TOLERANCES_SCHEMA, TOLERANCES_SCHEMA_MEAN)
    if not isinstance(tol, dict) or tol.get("schema") not in schemas:
        got = tol.get("schema") if isinstance(tol, dict) else type(tol).__name__
        raise ResultsError(f"{what} has schema {got!r}; expected one of {schemas}")
    mean = tol.get("reference") == "mean of the repeats"
    if mean != (tol["schema"] == TOLERANCES_SCHEMA_MEAN):
        raise ResultsError(
            f"{what}: schema {tol['schema']!r} with reference {tol.get('reference')!r} (a "
            f"file against the repeats' mean is {TOLERANCES_SCHEMA_MEAN!r}, else "
            f"{TOLERANCES_SCHEMA!r})"
        )
    runs = tol.get("reference_runs")
    if mean and not (
        isinstance(runs, dict) and all(isinstance(n, int) and n > 0 for n in runs.values())
    ):
        raise ResultsError(f"{what}: 'reference_runs' must map '<method>/<task>' to run counts")
    default = tol.get("default", {})
    per_run = tol.get("per_run", {})
    if not isinstance(default, dict) or not isinstance(per_run, dict):
        raise ResultsError(f"{what}: 'default' and 'per_run' must be objects")
    unchecked = tol.get("unchecked", {})
    if not isinstance(unchecked, dict) or not all(
        isinstance(v, dict) and all(isinstance(r, str) for r in v.values())
        for v in unchecked.values()
    ):
        raise ResultsError(f"{what}: 'unchecked' must map '<method>/<task>' to {{metric: reason}}")
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
    row.direction = metric_direction(path)
    reason = tolerances.get("unchecked", {}).get(f"{method}/{task}", {}).get(path)
    if reason is not None:  # too noisy over seeds to check at a useful tolerance
        row.status, row.note, row.tolerance = "unchecked", reason, None
        if ref.value is not None and cur.value is not None:
            row.delta = cur.value - ref.value
        return row
    if ref.value is None and cur.value is None and not (ref.note or cur.note):
        return None  # null in both (e.g. fgsm of the ensemble): nothing to compare
    if ref.value is None or cur.value is None:
        side = "reference" if ref.value is None else "current"
        note = (ref.note if ref.value is None else cur.note) or "null"
        row.note = f"missing metric: {side} {note}"
        return row
    if (ref.eps is not None or cur.eps is not None) and ref.eps != cur.eps:
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
    worse = {"higher": -row.delta, "lower": row.delta}.get(row.direction, abs(row.delta))
    slack = 1e-12 * max(1.0, abs(ref.value))  # float noise in the sum that made the mean
    if worse > tol + slack:
        row.status = "regressed"
    elif row.direction != "either" and -worse > tol + slack:
        row.status = "improved"
    else:
        row.status = "ok"
    return row


def _failed_hint(results: dict, absent: list[str]) -> str:
    """``"; of these, failed: <error>; ..."`` for the absent runs (``method/task/seed`` or
    ``method/task``) that the results list as failed (``results["failed"]``), else ``""``."""
    errors = []
    for f in results.get("failed") or []:
        if not isinstance(f, dict):
            continue
        name = f"{f.get('method')}/{f.get('task')}"
        if name in absent or f"{name}/seed{f.get('seed')}" in absent:
            errors.append(str(f.get("error") or f"{name}/seed{f.get('seed')}: no error recorded"))
    return f"; of these, failed: {'; '.join(errors)}" if errors else ""


def _same_suite(results: dict, reference: dict) -> str:
    """The reference's suite; ResultsError when the results are of another one."""
    suite = reference.get("suite")
    if results.get("suite") != suite:
        raise ResultsError(
            f"results are of suite {results.get('suite')!r} but the reference is of suite "
            f"{suite!r}: run `uqbench run --suite {suite}` or pick the matching reference"
        )
    return str(suite)


def _indexes(
    results: dict, reference: dict
) -> tuple[dict[tuple[str, str, int], dict], dict[tuple[str, str, int], dict]]:
    """Validated run indexes of both files; ResultsError when the reference holds no run."""
    ref_index = _index_runs(reference, "reference")
    if not ref_index:
        raise ResultsError("the reference holds no runs: there is nothing to check against")
    return ref_index, _index_runs(results, "results")


def check_results(
    results: dict,
    reference: dict,
    tolerances: dict,
    *,
    seeds: str = "same",
    two_sided: bool = False,
) -> CheckReport:
    """Compare ``results`` with ``reference`` metric by metric within ``tolerances``.

    Both dicts follow schema :data:`uqbench.results.RESULTS_SCHEMA`. With ``seeds="same"``
    every (method, task, seed) run of the reference must be in the results, and each side's
    mean is over the reference's seeds (seeds only the results have are ignored). With
    ``seeds="any"`` the results may have been made with other seeds (a clean re-run with new
    seeds, say): each side's mean is over its own seeds, and every (method, task) of the
    reference must be there. With ``two_sided``, a metric better than the reference by more
    than its tolerance fails the check too (the reference no longer describes the code).
    Raises ResultsError on bad input: another schema or suite, an empty reference, a missing
    run, a metric that is not a finite number or has the wrong shape.
    """
    if seeds not in ("same", "any"):
        raise ValueError(f"seeds must be 'same' or 'any', not {seeds!r}")
    validate_results(reference, "reference")
    validate_results(results, "results")
    validate_tolerances(tolerances)
    suite = _same_suite(results, reference)
    tol_suite = tolerances.get("suite")
    if tol_suite is not None and tol_suite != suite:
        raise ResultsError(f"tolerances are for suite {tol_suite!r}, not {suite!r}")
    _reference_counts_match(reference, tolerances)

    ref_index, cur_index = _indexes(results, reference)
    if seeds == "same":
        absent = [run_name(key) for key in ref_index if key not in cur_index]
        what = "run(s) of the reference (method/task/seed)"
    else:
        have = {key[:2] for key in cur_index}
        pairs = dict.fromkeys(key[:2] for key in ref_index)
        absent = [f"{m}/{t}" for m, t in pairs if (m, t) not in have]
        what = "(method, task) pair(s) of the reference"
    if absent:
        hint = _failed_hint(results, absent)
        if seeds == "same" and {k[:2] for k in ref_index} <= {k[:2] for k in cur_index}:
            hint += " (the results use other seeds: compare seed means with --any-seeds)"
        raise ResultsError(f"results lack {len(absent)} {what}: {', '.join(absent)}{hint}")

    report = CheckReport(suite=suite, n_runs=len(ref_index), two_sided=two_sided, seeds=seeds)
    groups: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for key in ref_index:
        groups.setdefault(key[:2], []).append(key)
    for (method, task), keys in groups.items():
        ref_by_seed = {k[2]: ref_index[k] for k in keys}
        if seeds == "same":
            cur_by_seed = {k[2]: cur_index[k] for k in keys}
        else:
            cur_by_seed = {k[2]: r for k, r in cur_index.items() if k[:2] == (method, task)}
        ref_runs, cur_runs = list(ref_by_seed.values()), list(cur_by_seed.values())
        paths: list[str] = []
        for run in ref_runs:
            paths += [p for p in run_metric_paths(run["metrics"]) if p not in paths]
        ref_agg = aggregate_run_metrics(ref_runs, paths)
        cur_agg = aggregate_run_metrics(cur_runs, paths)
        for path in paths:
            row = _compare(method, task, path, ref_agg[path], cur_agg[path], tolerances)
            if row is not None:
                report.rows.append(row)
        row = _class_counts_row(method, task, ref_by_seed, cur_by_seed, tolerances, seeds)
        if row is not None:
            report.rows.append(row)
    return report


#: The check row of the data's class composition (not a metric: no value, no tolerance).
CLASS_COUNTS = "data.class_counts"


def _class_counts_row(
    method: str,
    task: str,
    ref_runs: dict[int, dict],
    cur_runs: dict[int, dict],
    tolerances: dict,
    seeds: str,
) -> CheckRow | None:
    """Whether the current runs' splits hold as many inputs of each class as the
    reference's (``data.class_counts``: train, test, each labelled OOD set), or None when the
    reference recorded no counts (a regression task, a reference made before version 4).

    With ``seeds="same"`` each run is compared with the reference run of its seed. With
    ``seeds="any"`` only the splits on which every reference run agrees are compared: a
    stratified subset (every built-in task and OOD set) has the same counts for any seed, a
    split drawn otherwise (a plug-in's random subset) does not and is left out, said in the
    note. A split drawn differently from the reference's (the first files of an OOD set
    instead of a stratified subset) is "regressed", naming the splits. The tolerance file
    may list ``data.class_counts`` as unchecked for a (method, task), like a metric.
    """
    recorded = {s: _at(r, ("data", "class_counts")) for s, r in ref_runs.items()}
    recorded = {s: c for s, c in recorded.items() if isinstance(c, dict) and c}
    if not recorded:
        return None
    row = CheckRow(method, task, CLASS_COUNTS, None, None, None, None, "ok", direction="equal")
    reason = tolerances.get("unchecked", {}).get(f"{method}/{task}", {}).get(CLASS_COUNTS)
    if reason is not None:
        row.status, row.note = "unchecked", reason
        return row
    first = next(iter(recorded.values()))
    stable = {k: v for k, v in first.items() if all(c.get(k) == v for c in recorded.values())}
    varying = sorted(set().union(*recorded.values()) - set(stable))
    ignored = set(varying) if seeds == "any" else set()  # the same seed's counts must match
    differ: dict[str, tuple[Any, Any]] = {}  # split -> (reference, current) counts
    for seed, run in cur_runs.items():
        got = _at(run, ("data", "class_counts"))
        if not isinstance(got, dict):
            row.status, row.note = "missing", "missing: the results do not record class counts"
            return row
        expected = recorded.get(seed, {}) if seeds == "same" else stable
        for split in sorted((set(expected) | set(got)) - ignored):
            if expected.get(split) != got.get(split):
                differ.setdefault(split, (expected.get(split), got.get(split)))
    if differ:
        split, (ref, cur) = next(iter(differ.items()))
        row.status = "regressed"
        row.note = (
            f"other inputs than the reference's in {', '.join(differ)} (e.g. {split}: class "
            f"counts {ref} in the reference, {cur} now)"
        )
    elif seeds == "any" and varying:
        row.note = f"not compared: {', '.join(varying)} differ between the reference's seeds"
    return row


# --------------------------------------------------------------------------- the tripwire


@dataclass
class ExactDiff:
    """One metric leaf of one run whose value differs from the reference's."""

    method: str
    task: str
    seed: int
    metric: str  # dotted path inside the run's metrics, list items as [i]
    reference: Any
    current: Any


@dataclass
class ExactReport:
    """Outcome of :func:`check_identical`: every metric leaf that differs, run by run."""

    suite: str
    n_runs: int
    n_values: int  # metric leaves compared
    diffs: list[ExactDiff] = field(default_factory=list)
    #: Why nothing was compared (results of another machine class, ``--if-same-machine``).
    skipped: str | None = None
    #: :func:`check_close`'s tolerance; None for the tripwire (bit for bit).
    rtol: float | None = None
    tasks: list[str] | None = None  # the tasks compared (``--tasks``); None: every task

    @property
    def passed(self) -> bool:
        """True when every compared value is identical to the reference's (within ``rtol``
        when set; or, skipped, nothing was compared)."""
        return not self.diffs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "mode": "exact" if self.rtol is None else "close",
            "suite": self.suite,
            "passed": self.passed,
            "skipped": self.skipped,
            **({} if self.rtol is None else {"rtol": self.rtol}),
            "tasks": self.tasks,
            "n_runs": self.n_runs,
            "n_values": self.n_values,
            "diffs": [asdict(d) for d in self.diffs],
        }


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts and lists to {dotted path: scalar}."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_leaves(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _identical(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def check_identical(results: dict, reference: dict) -> ExactReport:
    """The behaviour tripwire: every metric of every reference run, bit for bit.

    On the machine class the reference was made on, a suite run with the reference's seeds
    is exactly repeatable, so any difference means that behaviour changed. Compares every
    leaf of each run's ``metrics`` (reliability bins, ECDFs and FGSM curves included);
    runs only the results have are ignored. Raises ResultsError on bad input as
    :func:`check_results` does.
    """
    validate_results(reference, "reference")
    validate_results(results, "results")
    suite = _same_suite(results, reference)
    ref_index, cur_index = _reference_runs_present(results, reference)
    report = ExactReport(suite=suite, n_runs=len(ref_index), n_values=0)
    for key, ref_run in ref_index.items():
        ref_leaves = _exact_leaves(ref_run)
        counts = any(path.startswith(CLASS_COUNTS) for path in ref_leaves)
        cur_leaves = _exact_leaves(cur_index[key], counts=counts)
        for path in list(ref_leaves) + [p for p in cur_leaves if p not in ref_leaves]:
            report.n_values += 1
            a, b = ref_leaves.get(path, "<absent>"), cur_leaves.get(path, "<absent>")
            if not _identical(a, b):
                report.diffs.append(ExactDiff(*key, path, a, b))
    return report


def check_close(results: dict, reference: dict, rtol: float) -> ExactReport:
    """The tripwire's tolerant form, for any machine class: every checked metric of every
    reference run (the statistical check's metrics, :func:`run_metric_paths`) within ``rtol``
    of the same seed's value, relative to the larger of the reference value's magnitude and
    1 (so a proportion such as a coverage gets ``rtol`` absolute); FGSM's eps grid and the
    class counts of the data each run saw (where the reference records them) equal.

    On another machine class than the reference's, float rounding makes the same seed's runs
    drift apart: on some tasks far less than their seeds differ (the ci suite's toy task:
    6e-5 relative at most, Intel against AMD), on others by as much (MNIST's error moved by
    up to 0.4 points). This checks the first kind, whose seed spread is too wide for the
    statistical check's tolerances. Raises ResultsError on bad input as
    :func:`check_identical` does.
    """
    validate_results(reference, "reference")
    validate_results(results, "results")
    suite = _same_suite(results, reference)
    ref_index, cur_index = _reference_runs_present(results, reference)
    report = ExactReport(suite=suite, n_runs=len(ref_index), n_values=0, rtol=rtol)
    for key, ref_run in ref_index.items():
        cur_run = cur_index[key]
        for path in run_metric_paths(ref_run["metrics"]):
            want, want_eps = extract_metric(ref_run["metrics"], path)
            got, got_eps = extract_metric(cur_run["metrics"], path)
            report.n_values += 1
            if want_eps != got_eps:  # a summary over another eps grid measures another thing
                report.diffs.append(ExactDiff(*key, f"{path} (eps grid)", want_eps, got_eps))
            elif want is None and got is None:
                continue
            elif want is None or got is None or not abs(got - want) <= rtol * max(abs(want), 1):
                report.diffs.append(ExactDiff(*key, path, want, got))
        want_counts = _at(ref_run, ("data", "class_counts"))
        if want_counts is not None:  # the data each run saw, as the other levels compare it
            report.n_values += 1
            got_counts = _at(cur_run, ("data", "class_counts"))
            if got_counts != want_counts:
                report.diffs.append(ExactDiff(*key, CLASS_COUNTS, want_counts, got_counts))
    return report


def _exact_leaves(run: dict, counts: bool = True) -> dict[str, Any]:
    """What the tripwire compares of a run: every leaf of its metrics and, with ``counts``
    (where the reference records them), of the data it saw (``data.class_counts``)."""
    found = _at(run, ("data", "class_counts")) if counts else None
    return {**_leaves(run["metrics"]), **({} if found is None else _leaves(found, CLASS_COUNTS))}


def _reference_runs_present(results: dict, reference: dict) -> tuple[dict, dict]:
    """The reference's and the results' runs by (method, task, seed); ResultsError naming
    the reference runs the results lack."""
    ref_index, cur_index = _indexes(results, reference)
    absent = [run_name(key) for key in ref_index if key not in cur_index]
    if absent:
        raise ResultsError(
            f"results lack {len(absent)} run(s) of the reference (method/task/seed): "
            + ", ".join(absent)
            + _failed_hint(results, absent)
        )
    return ref_index, cur_index


def format_exact(report: ExactReport, limit: int = 40) -> str:
    """What moved (the first ``limit`` values, then a count per run), and the verdict."""
    lines = []
    what = "tripwire" if report.rtol is None else "close check"
    if report.skipped:
        return f"{what} SKIPPED ({_scope(report)}): {report.skipped}"
    if report.diffs:
        header = ("method", "task", "seed", "metric", "reference", "current")
        cells = [
            (d.method, d.task, str(d.seed), d.metric, _fmt_any(d.reference), _fmt_any(d.current))
            for d in report.diffs[:limit]
        ]
        lines += _table(header, cells)
        if len(report.diffs) > limit:
            lines.append(f"... and {len(report.diffs) - limit} more")
        per_run: dict[str, int] = {}
        for d in report.diffs:
            name = run_name((d.method, d.task, d.seed))
            per_run[name] = per_run.get(name, 0) + 1
        lines.append(
            "changed runs: " + ", ".join(f"{name} ({n} values)" for name, n in per_run.items())
        )
        differ = (
            "differ from the reference"
            if report.rtol is None
            else f"differ from the same seeds' in the reference by more than {_rtol(report)}"
        )
        lines.append(
            f"{what} FAILED: behaviour changed: {len(report.diffs)} of {report.n_values} "
            f"metric values of {len(per_run)} of {report.n_runs} runs {differ} "
            f"({_scope(report)}); {REFRESH_HINT}"
        )
    else:
        same = (
            "identical to the reference"
            if report.rtol is None
            else f"within {_rtol(report)} of the same seeds' in the reference"
        )
        lines.append(
            f"{what} PASSED: all {report.n_values} metric values of {report.n_runs} runs "
            f"are {same} ({_scope(report)})"
        )
    return "\n".join(lines)


def _scope(report: CheckReport | ExactReport) -> str:
    """``suite 'ci'``, and the tasks compared when ``--tasks`` chose some."""
    tasks = f", tasks {', '.join(report.tasks)}" if report.tasks is not None else ""
    return f"suite {report.suite!r}{tasks}"


def _rtol(report: ExactReport) -> str:
    return f"{report.rtol:g} (relative; absolute for values below 1)"


def _fmt_any(x: Any) -> str:
    if isinstance(x, float):
        return repr(x)
    return "null" if x is None else str(x)


def _table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for c in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    return lines


# --------------------------------------------------------------------------- output


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4g}" if signed else f"{x:.4g}"


def format_check_table(report: CheckReport, all_rows: bool = False) -> str:
    """One line per compared (method, task, metric), then what failed and the verdict.

    Columns: reference and current value (seed means), current - reference, the tolerance,
    which direction is better and the verdict. With ``all_rows`` False only rows that
    moved or do not pass are listed.
    """
    shown = [
        r
        for r in report.rows
        if all_rows or r.moved or r.status in report.failing or r.status == "improved"
    ]
    header = (
        "method",
        "task",
        "metric",
        "better",
        "reference",
        "current",
        "delta",
        "tolerance",
        "verdict",
    )
    cells = [
        (
            r.method,
            r.task,
            r.metric,
            r.direction,
            _fmt(r.reference),
            _fmt(r.current),
            _fmt(r.delta, signed=True),
            _fmt(r.tolerance),
            (r.status.upper() if r.status in report.failing else r.status)
            + (f" ({r.note})" if r.note else ""),
        )
        for r in shown
    ]
    lines = _table(header, cells) if cells else ["(no metric moved)"]
    bad = [r for r in report.rows if r.status in report.failing and r.status != "missing"]
    for r in bad:  # the bound each failing row crossed, in words
        if r.tolerance is None:  # the class counts: no bound, the note says what differs
            lines.append(f"-> {r.method}/{r.task} {r.metric}: {r.note}")
            continue
        if r.direction == "either":
            limit = "above" if r.delta > 0 else "below"
        else:
            limit = "above" if (r.status == "regressed") != (r.direction == "higher") else "below"
        sign = "+" if limit == "above" else "-"
        bound = r.reference + (r.tolerance if limit == "above" else -r.tolerance)
        why = "a move either way fails" if r.direction == "either" else f"{r.direction} is better"
        lines.append(
            f"-> {r.method}/{r.task} {r.metric}: {_fmt(r.current)} is {limit} {_fmt(bound)} "
            f"(reference {_fmt(r.reference)} {sign} tolerance {_fmt(r.tolerance)}; {why})"
        )
    if any(r.status == "improved" for r in bad):
        lines.append(
            "an improvement beyond the tolerance fails this two-sided check: " + REFRESH_HINT
        )
    verdict = "PASSED" if report.passed else "FAILED"
    counts = ", ".join(f"{report.count(s)} {s}" for s in STATUSES)
    seeds = "the reference's seeds" if report.seeds == "same" else "each side's own seeds"
    n_counts = sum(r.metric == CLASS_COUNTS for r in report.rows)
    counted = f" and the class counts of {n_counts} (method, task) pairs" if n_counts else ""
    lines.append(
        f"check {verdict}: {_scope(report)}, {len(report.rows) - n_counts} metrics"
        f"{counted} of "
        f"{report.n_runs} reference runs compared (means over {seeds}"
        f"{', two-sided' if report.two_sided else ''}): {counts}"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def default_tolerance_path(reference_path: Path) -> Path:
    """``<reference stem>-tolerances.json`` beside the reference file."""
    return reference_path.with_name(f"{reference_path.stem}-tolerances.json")


#: The sections of a run's ``config`` that a user sets (suite, flags); the rest derives.
SETTING_SECTIONS = ("train", "eval", "data", "arch", "posterior")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b": 1}`` for ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def settings_differences(results: Any, reference: Any) -> list[str]:
    """``"method/task key: ours vs theirs"`` for each setting (``config`` of
    :data:`SETTING_SECTIONS`) that a run of the results and a reference run of the same
    (method, task) both record, with different values. A key only one side records (a
    setting added since the reference was made) is not a difference."""
    if not isinstance(results, dict) or not isinstance(reference, dict):
        return []

    def settings(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for r in doc.get("runs") or []:
            if isinstance(r, dict) and isinstance(r.get("config"), dict):
                cfg = {s: r["config"].get(s) for s in SETTING_SECTIONS if s in r["config"]}
                out.setdefault((str(r.get("method")), str(r.get("task"))), _flat(cfg))
        return out

    ours, theirs = settings(results), settings(reference)
    found = []
    for key in sorted(set(ours) & set(theirs)):
        a, b = ours[key], theirs[key]
        for name in sorted(set(a) & set(b)):
            if a[name] != b[name]:
                found.append(f"{key[0]}/{key[1]} {name}: {a[name]!r} vs {b[name]!r}")
    return found


#: What a machine class is, for the tripwire: the environment keys whose values decide which
#: kernels run (a float sum's order): the device, the CPU model, torch's build, its threads.
MACHINE_KEYS = ("device", "cpu", "torch", "torch_threads")


def machine_differences(results: dict, reference: dict) -> list[str]:
    """``"key: ours vs theirs"`` for each of :data:`MACHINE_KEYS` both sides' ``environment``
    record with different values: results of another machine class, which a bit-for-bit
    comparison cannot judge (an Intel Xeon's float rounding differs from an AMD EPYC's)."""
    ours, theirs = (
        d.get("environment") if isinstance(d, dict) else None for d in (results, reference)
    )
    if not isinstance(ours, dict) or not isinstance(theirs, dict):
        return []
    return [
        f"{k}: {ours[k]!r} vs {theirs[k]!r}"
        for k in MACHINE_KEYS
        if k in ours and k in theirs and ours[k] != theirs[k]
    ]


def data_differences(results: dict, reference: dict) -> list[str]:
    """``"task: dataset (ours; against theirs)"`` for each data set that runs of one task were
    made from in different copies on the two sides (:func:`data_mismatch`): a reference holds
    only for the data it was made from (CIFAR-10's stand-in against the real batches, say)."""

    def copies(doc: dict) -> dict[str, dict[str, DataCopy]]:
        out: dict[str, dict[str, DataCopy]] = {}
        for r in doc.get("runs") or []:
            if isinstance(r, dict):
                task = out.setdefault(str(r.get("task")), {})
                for dataset, copy in data_identity(data_files(r)).items():
                    task.setdefault(dataset, copy)
        return out

    ours, theirs = copies(results), copies(reference)
    found = []
    for task in sorted(set(ours) & set(theirs)):
        differ = data_mismatch(ours[task], theirs[task])
        if differ:
            found.append(f"{task}: {differ}")
    return found


def merge_results(docs: list[dict], names: list[str]) -> dict:
    """One results dict holding the runs of several results dicts of one suite (a reference
    made of repeats with different seeds, or seeds run into other folders); the first one's
    other fields are kept."""
    for doc, name in zip(docs, names, strict=True):
        validate_results(doc, name)
    suites = sorted({str(d.get("suite")) for d in docs})
    if len(suites) != 1:  # before the settings: another suite's all differ
        raise ResultsError(f"the results files are of different suites: {suites}")
    runs: list[dict] = []
    seen: dict[tuple[str, str, int], str] = {}
    made_by: dict[tuple[str, str], tuple[Any, tuple[str, str, int], str]] = {}
    for doc, name in zip(docs, names, strict=True):
        differ = settings_differences(doc, docs[0])
        if differ:
            raise ResultsError(
                f"the results files were made with other settings: {differ[0]} ({name} vs "
                f"{names[0]}); runs merged as one must differ by their seeds only"
            )
        for key, run in _index_runs(doc, name).items():
            if key in seen:
                raise ResultsError(f"run {run_name(key)} is in both {seen[key]} and {name}")
            seen[key] = name
            runs.append(run)
            version = run.get("code_version")
            first = made_by.setdefault(key[:2], (version, key, name)) if version else None
            if first is not None and version != first[0]:
                # The runner redoes such runs within one folder; across folders, say so.
                raise ResultsError(
                    f"run {run_name(key)} ({name}) was made by code version {version}, run "
                    f"{run_name(first[1])} ({first[2]}) by {first[0]}; runs merged as one must "
                    "come from the same code version"
                )
    return {**docs[0], "runs": runs}


def read_merged(
    paths: Path | list[Path], what: str = "results file"
) -> tuple[dict, list[Path], dict[tuple[str, str, int], Path]]:
    """The validated runs of one results file or several as one results dict
    (:func:`merge_results`; each may be a results.json or its directory), the files, and
    the file each run (``(method, task, seed)``) came from; ``what`` names them in errors."""
    files = [
        resolve_results_path(Path(p), what) for p in (paths if isinstance(paths, list) else [paths])
    ]
    for i, f in enumerate(files):
        if f.resolve() in (g.resolve() for g in files[:i]):
            raise ResultsError(f"{what} {f} is given twice")
    docs = [read_json(f, what) for f in files]
    if len(docs) == 1:
        validate_results(docs[0], str(files[0]))
        merged = docs[0]
    else:
        merged = merge_results(docs, [str(f) for f in files])
    validate_comparable(merged, str(files[0]) if len(files) == 1 else what)
    origins = {
        (r["method"], r["task"], r["seed"]): f
        for doc, f in zip(docs, files, strict=True)
        for r in doc["runs"]
    }
    return merged, files, origins


def read_reference(paths: Path | list[Path]) -> tuple[dict, list[Path]]:
    """The reference of one results file or several (one reference of all their runs), and
    the files: :func:`read_merged`."""
    reference, files, _ = read_merged(paths, "reference file")
    return reference, files


def _reference_counts_match(reference: dict, tolerances: dict) -> None:
    """Tolerances derived against the mean of the repeats (``"reference": "mean of the
    repeats"``, ``python -m uqbench.tolerances --reference-mean``) hold only against a
    reference of the repeats' runs (``reference_runs`` per (method, task)): with fewer they
    are too tight."""
    if tolerances.get("reference") != "mean of the repeats":
        return
    held: dict[str, int] = {}
    for method, task, _ in _index_runs(reference, "reference"):
        held[f"{method}/{task}"] = held.get(f"{method}/{task}", 0) + 1
    for pair, n in tolerances["reference_runs"].items():
        if pair in held and held[pair] != n:
            raise ResultsError(
                f"the tolerances hold against the mean of the {n} runs of {pair} they were "
                f"derived from, but the reference holds {held[pair]}: give every repeat to "
                "--reference"
            )


def run_check(
    results_path: Path,
    reference_path: Path | list[Path],
    tolerance_path: Path | None = None,
    *,
    exact: bool = False,
    seeds: str = "same",
    two_sided: bool = False,
    if_same_machine: bool = False,
    close: float | None = None,
    tasks: list[str] | None = None,
) -> CheckReport | ExactReport:
    """Load the files and run the statistical check, or with ``exact`` the tripwire: results
    of another machine class than the reference's (:func:`machine_differences`) are refused,
    or with ``if_same_machine`` the tripwire is skipped (a report saying why); or, with
    ``close``, :func:`check_close` at that tolerance, on any machine class. ``tasks``: only
    the runs of these tasks are compared (each must be one of the reference's).

    ``results_path`` and ``reference_path`` may each be a results.json or a directory holding
    one; several reference paths are one reference holding all their runs
    (:func:`merge_results`), whose tolerance file must be given. Without ``tolerance_path``,
    ``<reference stem>-tolerances.json`` beside the reference is used (ResultsError when it
    does not exist); the tripwire needs no tolerances.
    """
    results_file = resolve_results_path(Path(results_path))
    results = read_json(results_file, "results file")
    reference, files = read_reference(reference_path)
    validate_results(results, "results")
    if tasks is not None:
        have = sorted({str(r.get("task")) for r in reference.get("runs") or []})
        unknown = [t for t in tasks if t not in have]
        if unknown:
            raise ResultsError(
                f"--tasks {' '.join(unknown)}: the reference has no runs of "
                f"{'this task' if len(unknown) == 1 else 'these tasks'}; its tasks: "
                + ", ".join(have)
            )
        results, reference = (_only_tasks(d, tasks) for d in (results, reference))
    validate_comparable(results, "results")
    _same_suite(results, reference)  # another suite's settings all differ: say which suite
    for differ, made, remedy in (
        (
            settings_differences(results, reference),
            "with other settings",
            "run the reference's suite without overriding it (--epochs, --set, ...)",
        ),
        (
            data_differences(results, reference),
            "from other data",
            "a reference holds only for the data it was made from: make one from this data "
            "(README, 'Regression check')",
        ),
    ):
        if differ:
            more = f" (and {len(differ) - 3} more)" if len(differ) > 3 else ""
            raise ResultsError(
                f"the results were made {made} than the reference, so their metrics cannot be "
                f"compared: {'; '.join(differ[:3])}{more} (results vs reference); {remedy}"
            )
    report: CheckReport | ExactReport
    if close is not None:
        report = check_close(results, reference, close)
    elif exact:
        report = _tripwire(results, reference, if_same_machine)
    else:
        if tolerance_path is None:
            if len(files) > 1:
                raise ResultsError(
                    "a reference of several files needs its tolerance file named (--tolerance): "
                    "the one beside the first file holds against that file's runs alone"
                )
            tolerance_path = default_tolerance_path(files[0])
            if not tolerance_path.is_file():
                raise ResultsError(
                    f"no tolerance file given and none at {tolerance_path}; derive one with "
                    "`python -m uqbench.tolerances OUT.json RESULTS1.json RESULTS2.json ...`"
                )
        tolerances = load_tolerances(tolerance_path)
        report = check_results(results, reference, tolerances, seeds=seeds, two_sided=two_sided)
    report.tasks = tasks
    return report


def _tripwire(results: dict, reference: dict, if_same_machine: bool) -> ExactReport:
    """:func:`check_identical`, or for results of another machine class than the
    reference's a refusal (ResultsError), or with ``if_same_machine`` a skip saying why."""
    other_machine = machine_differences(results, reference)
    if not other_machine:
        return check_identical(results, reference)
    why = (
        "bit-for-bit equality holds only on the machine class the reference was made on, "
        f"and these results come from another: {'; '.join(other_machine)} (results vs "
        "reference)"
    )
    if not if_same_machine:
        raise ResultsError(
            f"{why}; compare them with the statistical check (without --exact) or, for the "
            "same seeds within a tolerance, --close RTOL, or make a reference on this machine "
            "class (results/reference/README.md)"
        )
    _reference_runs_present(results, reference)  # skipped, but not for lack of runs
    return ExactReport(suite=_same_suite(results, reference), n_runs=0, n_values=0, skipped=why)


def _only_tasks(doc: dict, tasks: list[str]) -> dict:
    """``doc`` with only the runs (and failed runs) of ``tasks``."""
    out = {**doc, "runs": [r for r in doc["runs"] if r.get("task") in tasks]}
    if isinstance(doc.get("failed"), list):
        out["failed"] = [f for f in doc["failed"] if isinstance(f, dict) and f.get("task") in tasks]
    return out


def format_report(report: CheckReport | ExactReport, all_rows: bool = False) -> str:
    """Human-readable text of either kind of report."""
    if isinstance(report, ExactReport):
        return format_exact(report)
    return format_check_table(report, all_rows=all_rows)
