"""The paired differences of two methods on one task, as a table, outside the report.

``python -m uqbench.pairwise results/<suite> TASK A B [STAT ...]`` prints ``A - B`` for each
statistic (named as in the discussion notes, :func:`uqbench.paper.stat_named`) with its 95%
interval from :func:`uqbench.compare.compare`: the numbers the report's verdicts rest on, for
any pair of methods. ``--test-noise`` widens each interval over seeds by the test set's noise
(:func:`uqbench.stats.t_with_test_noise`), which the default report's tables leave out (its
verdicts are given with it too; ``uqbench report --test-noise`` puts it everywhere).
``--with DIR`` adds the runs of another folder of the same suite and settings (more seeds run
elsewhere), ``--level`` sets the intervals' coverage (a multiplicity correction).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from uqbench import compare as C
from uqbench import metric_catalog as catalog
from uqbench import stats as S
from uqbench.check import read_merged
from uqbench.errors import ResultsError, UQBenchError
from uqbench.paper import stat_named
from uqbench.report.view import ResultsView

#: The statistics :func:`paired_table` shows when none are named: those a task's runs have
#: values of, ``{ood}`` being the first OOD set of its runs.
PAIRED_DEFAULTS = (
    "error_pct",
    "nll",
    "ece",
    "ood.{ood}.ecdf_area",
    "ood.{ood}.auroc",
    "rmse",
    "loglik_inside",
    "loglik_outside",
)


def _task_runs(view: ResultsView, task: str) -> list[dict]:
    return [r for m in view.methods(task) for r in view.runs_for(task, m)]


def _has_value(name: str, h_max: float, runs: list[dict]) -> bool:
    try:
        stat = stat_named(name, h_max)
    except UQBenchError:
        return False
    return any(stat.value(r.get("metrics") or {}) is not None for r in runs)


def named_statistics(view: ResultsView, task: str, h_max: float) -> list[str]:
    """Every statistic of the catalogue (and the discussion notes' own) that the runs of
    ``task`` have a value of: what an error offers when a name has none."""
    names = [m.name for m in catalog.metrics() if m.scope != "ood"]
    names += ["fgsm.adv_accuracy", "fgsm.last_accuracy", "fgsm.last_entropy"]
    names += [f"band.{b}" for b in ("inside", "outside", "ratio")]
    for ood in view.ood_sets(task):
        names += [f"ood.{ood}.{m.name}" for m in catalog.metrics("ood")]
        names.append(f"ood.{ood}.ecdf_area")
    runs = _task_runs(view, task)
    return [n for n in dict.fromkeys(names) if _has_value(n, h_max, runs)]


def default_statistics(view: ResultsView, task: str, h_max: float) -> list[str]:
    """:data:`PAIRED_DEFAULTS` that the runs of ``task`` have values of."""
    ood = (view.ood_sets(task) or ["-"])[0]
    names = [n.format(ood=ood) for n in PAIRED_DEFAULTS]
    runs = _task_runs(view, task)
    return [n for n in names if _has_value(n, h_max, runs)]


def paired_table(
    view: ResultsView, task: str, a: str, b: str, names: list[str] | None = None
) -> str:
    """A Markdown table of ``a - b`` on ``task`` for each statistic in ``names`` (as
    :func:`uqbench.paper.stat_named` reads them; None: :func:`default_statistics`), each with
    its interval (at ``view.level``, 95% unless set), how it was made and whether it excludes
    0."""
    if task not in view.tasks():
        raise ResultsError(f"no runs of task {task!r} here; tasks: {', '.join(view.tasks())}")
    for m in (a, b):
        if m not in view.methods(task):
            ran = ", ".join(view.methods(task))
            raise ResultsError(f"no runs of {m!r} on {task} here; methods: {ran}")
    h_max = math.log(view.n_classes(task) or 10)
    runs = _task_runs(view, task)
    if names is None:
        names = default_statistics(view, task, h_max)
        if not names:
            raise ResultsError(
                f"none of the default statistics has a value in the runs of {task} here; name "
                f"some of: {', '.join(named_statistics(view, task, h_max))}"
            )
    stats = [stat_named(name, h_max) for name in names]
    rows = [
        f"| {task}: {a} - {b} | difference | {100 * view.level:.4g}% interval | resolved | from |",
        "|---|--:|--:|---|---|",
    ]
    for name, stat in zip(names, stats, strict=True):
        if all(stat.value(r.get("metrics") or {}) is None for r in runs):
            # A typo (``erorr_pct``) reads as a path no run has: say so, not "no value".
            raise ResultsError(
                f"statistic {name!r} has no value in any run of {task} here; these have: "
                f"{', '.join(named_statistics(view, task, h_max))}, or a dotted path into a run's "
                "metrics"
            )
        d = C.compare(view, task, a, b, stat)
        if d is None:
            rows.append(f"| {name} | - | - | - | no value in runs of both |")
            continue
        iv = "-" if d.lo is None else f"[{d.lo:.4g}, {d.hi:.4g}]"
        resolved = "-" if d.lo is None else ("yes" if d.lo > 0 or d.hi < 0 else "no")
        rows.append(f"| {name} | {d.value:.4g} | {iv} | {resolved} | {d.how} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m uqbench.pairwise RESULTS TASK A B [STAT ...]``: print :func:`paired_table`."""
    p = argparse.ArgumentParser(
        prog="python -m uqbench.pairwise",
        description="Paired differences of two methods on one task.",
    )
    p.add_argument("results", help="a results/<suite> folder")
    p.add_argument("task")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument(
        "stats",
        nargs="*",
        help=f"statistics (default: those of {' '.join(PAIRED_DEFAULTS)} the task's runs have, "
        "{ood} its first OOD set)",
    )
    p.add_argument(
        "--test-noise",
        action="store_true",
        help="widen the paired t-interval over seeds by the test set's noise (a bootstrap over "
        "the test examples all seeds share, from the runs' saved outputs)",
    )
    p.add_argument(
        "--with",
        dest="more",
        action="append",
        default=[],
        metavar="DIR",
        help="another results/<suite> folder whose runs join these (other seeds of the same "
        "suite and settings; repeatable)",
    )
    p.add_argument(
        "--level",
        type=float,
        default=S.LEVEL,
        help=f"coverage of the intervals (default {S.LEVEL}; e.g. 1 - 0.05/k for k "
        "comparisons, Bonferroni)",
    )
    args = p.parse_args(argv)
    try:
        if not 0 < args.level < 1:
            raise ResultsError(f"--level must lie in (0, 1), got {args.level}")
        results, files, origins = read_merged([Path(args.results), *map(Path, args.more)])
        view = ResultsView(
            results,
            files[0].parent,
            test_noise=args.test_noise,
            run_dirs={run: f.parent for run, f in origins.items()},
        )
        view.level = args.level
        print(paired_table(view, args.task, args.a, args.b, args.stats or None), flush=True)
    except UQBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `python -m uqbench.pairwise ... | head -3`, as the CLI
        sys.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
