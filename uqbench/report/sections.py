"""The report's sections: each adds its headings, tables and figures to a :class:`Doc`.

They appear in the report in the order :func:`uqbench.report.write_report` calls them.
"""

from __future__ import annotations

import math
import tomllib
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from uqbench import compare as C
from uqbench import metric_catalog as catalog
from uqbench import stats as S
from uqbench.errors import ConfigError, ResultsError
from uqbench.paper import (
    CLAIMS,
    FFLU_SPARSITY_PCT,
    PAPER_METHODS,
    TABLE2,
    TABLE2_ROWS,
    band_stat,
    stat_named,
)
from uqbench.report import figures as F
from uqbench.report.document import Doc
from uqbench.report.style import (
    CIFAR_UNVERIFIED,
    ReportView,
    fmt,
    interval_text,
    seconds,
    slug,
)
from uqbench.report.view import finite, get_path

#: Decimals of the test error (%), as declared.
ERROR_DIGITS = catalog.metric("error_pct").digits
#: The paper's figure each task's (or notMNIST's) entropy ECDF corresponds to.
PAPER_FIGURE = {"notmnist": "Figure 2", "cifar5": "Figure 3"}
#: The fields of a run file's ``plugins`` entries, as the report's columns.
PLUGIN_KEYS = ("class", "distribution", "version")


def header(doc: Doc, view: ReportView, results: dict[str, Any]) -> None:
    """Title and what is compared."""
    suite = results.get("suite", "?")
    doc.h(1, f"uqbench report: suite `{suite}`")
    doc.p(
        "Approximate posteriors for Bayesian neural networks compared on the experiments of "
        "Louizos & Welling (ICML 2017), *Multiplicative Normalizing Flows for Variational "
        "Bayesian Neural Networks*."
    )
    if _widened(view):
        doc.p(
            "**Intervals with the test set's noise** (`uqbench report --test-noise`): every "
            "interval over seeds of a statistic that can be recomputed from the runs' saved "
            "per-example outputs also covers the noise of the test set that all seeds share "
            "(section Against the paper says how); the others (the toy band widths, AURC, the "
            "shift metrics, runs without saved outputs) stay over seeds alone, and each "
            "claim's numbers say which they are. The default report's intervals, which the "
            "discussion notes quote, are over seeds alone."
        )
    elif view.test_noise:
        why = (
            "one seed: its intervals are over test examples already"
            if view.n_seeds() < 2
            else "no run saved per-example outputs"
        )
        doc.p(f"`--test-noise` was asked for, but no interval could be widened ({why}).")
    failed = results.get("failed") or []
    left_out = results.get("left_out") or []
    if failed or left_out:
        names = [f"{f.get('method')}-{f.get('task')}-seed{f.get('seed')}" for f in failed]
        names += [str(x.get("file")) for x in left_out]
        parts = [f"{len(failed)} run(s) FAILED"] if failed else []
        parts += [f"{len(left_out)} run file(s) of the results folder left out"] if left_out else []
        doc.p(
            f"**Not in these tables:** {' and '.join(parts)}: "
            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''} (section Command "
            "and environment says why)."
        )
    bad = view.unreadable_outputs()
    if bad:
        doc.p(
            f"**Saved per-example outputs missing or unreadable** for {len(bad)} run(s): "
            f"{', '.join(bad[:10])}{', ...' if len(bad) > 10 else ''}. What needs them "
            "(one-seed bootstrap intervals, the test-set noise) falls back as if they had "
            "not been saved, so intervals and best marks that involve these runs can differ "
            "from a complete report; `uqbench run` with the suite's command makes these runs "
            "again (the earlier records are kept in runs/superseded/)."
        )


def environment(doc: Doc, view: ReportView, results: dict[str, Any]) -> None:
    """The command, the machine, wall times, failed runs and run files left out."""
    doc.h(2, "Command and environment")
    doc.p("Command:")
    doc.code(str(results.get("command", "(not recorded)")))
    env = results.get("environment") or {}
    if env:
        doc.table(
            ["item", "value"],
            [[str(k), "unknown" if v is None else str(v)] for k, v in env.items()],
            "Environment of the run.",
        )
    train = sum(finite(r.get("train_seconds")) or 0.0 for r in view.runs)
    ev = sum(finite(r.get("eval_seconds")) or 0.0 for r in view.runs)
    line = (
        f"{len(view.runs)} runs; total wall time {seconds(train + ev)} "
        f"(training {seconds(train)}, evaluation {seconds(ev)})."
    )
    if finite(results.get("wall_seconds")) is not None:
        line += f" Wall time of the whole command: {seconds(results['wall_seconds'])}."
    doc.p(line)
    plugins: dict[tuple[str, ...], set[str]] = {}
    for r in view.runs:
        for p in r.get("plugins") if isinstance(r.get("plugins"), list) else []:
            if not isinstance(p, dict):
                continue
            key = tuple("—" if p.get(k) is None else str(p.get(k)) for k in PLUGIN_KEYS)
            plugins.setdefault(key, set()).add(f"{r.get('method')}/{r.get('task')}")
    if plugins:
        doc.table(
            ["plug-in class", "distribution", "version", "used by (method/task)"],
            [[*key, ", ".join(sorted(used))] for key, used in sorted(plugins.items())],
            "Code from outside uqbench behind these runs (run files' `plugins`; "
            "—: not from an installed distribution).",
        )
    failed = results.get("failed") or []
    if failed:
        doc.p(f"**{len(failed)} run(s) FAILED** and are not in any table:")
        doc.table(
            ["run", "error"],
            [
                [f"{f.get('method')}-{f.get('task')}-seed{f.get('seed')}", str(f.get("error"))]
                for f in failed
            ],
            "Failed runs (their run files say more).",
        )
    left_out = results.get("left_out") or []
    if left_out:
        doc.table(
            ["run file", "why it was left out"],
            [[str(x.get("file")), str(x.get("reason"))] for x in left_out],
            "Run files in the results folder that do not belong to these results.",
        )


def summary(doc: Doc, view: ReportView) -> None:
    """First screen: which posterior is best for what, marked only where resolved."""
    doc.h(2, "Summary: which posterior for what")
    rows = []

    def add(what: str, task: str, stat: C.Stat, digits: int, methods: list[str]) -> None:
        top, resolved = C.best(view, task, methods, stat)
        if top is None:
            return
        iv = C.interval(view, task, top, stat)
        value = interval_text(iv, digits) if iv is not None else "—"
        if resolved:
            absent = [
                view.name(m) for m in view.methods(task) if C.interval(view, task, m, stat) is None
            ]
            verdict = f"**{view.name(top)}** (resolved against every other" + (
                f"; no value for {', '.join(absent)})" if absent else ")"
            )
        else:
            rivals = [
                view.name(m)
                for m in methods
                if m != top
                and C.interval(view, task, m, stat) is not None
                and C.order(view, task, *((top, m) if stat.lower_better else (m, top)), stat) != 1
            ]
            verdict = f"{view.name(top)} by its mean; not resolved against " + ", ".join(rivals)
        if view.unconverged(task, top):
            verdict += " †"
        rows.append([what, view.task_name(task), value, verdict])

    def declared(name: str, ood: str | None = None) -> tuple[C.Stat, int]:
        return C.metric_stat(name, ood), catalog.metric(name).digits

    for t in view.tasks("classification"):
        ms = view.methods(t)
        add("accuracy (test error %)", t, *declared("error_pct"), ms)
        add("calibration (ECE)", t, *declared("ece"), ms)
        add("calibration (NLL)", t, *declared("nll"), ms)
        for o in view.ood_sets(t):  # one row per OOD set: they answer different questions
            add(f"OOD detection (AUROC, {o})", t, *declared("auroc", o), ms)
        fg = [m for m in ms if C.interval(view, t, m, C.fgsm_stat("adv_accuracy")) is not None]
        add("adversarial (FGSM accuracy, mean over eps > 0)", t, C.fgsm_stat("adv_accuracy"), 3, fg)
    for t in view.tasks("regression"):
        ms = view.methods(t)
        add("regression (log density outside the data)", t, *declared("loglik_outside"), ms)
        add("regression (log density inside the data)", t, *declared("loglik_inside"), ms)
    if not rows:
        doc.p("No metric to compare.")
        return
    seeds = view.n_seeds()
    note = ""
    if seeds <= 1:
        note = " With one seed, training noise is not measured: " + (
            "intervals cover test-set noise only (bootstrap over test examples)."
            if view.has_outputs()
            else "these runs saved no per-example outputs either, so no difference is "
            "resolved; rerun with more seeds (`--seeds 0 1 2`) to decide."
        )
    doc.table(
        ["for", "task", "value (best mean)", "best"],
        rows,
        "Best mean per criterion; named best only when its 95% interval of the difference "
        f"to every other method{_NOISE_TOO if _widened(view) else ''} excludes 0 (no "
        "correction for the many comparisons). † = not converged."
        + note
        + view.data_label(view.tasks()),
    )


def settings(doc: Doc, view: ReportView) -> None:
    """What each task's runs actually used: training length, samples, members, subsets."""
    doc.h(2, "Settings")
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            runs = view.runs_for(t, m)
            r = runs[0]
            cfg = r.get("config") or {}
            tr, ev, data = cfg.get("train") or {}, cfg.get("eval") or {}, r.get("data") or {}
            post = cfg.get("posterior") or {}
            n_ood = data.get("n_ood") or {}
            rows.append(
                [
                    view.task_name(t),
                    view.name(m),
                    ", ".join(str(x.get("seed")) for x in runs),
                    str(tr.get("epochs", "—")),
                    str(tr.get("batch_size", "—")),
                    str(ev.get("test_samples", "—")),
                    str(ev.get("fgsm_samples", "—")) if get_path(r, ("metrics", "fgsm")) else "—",
                    str(ev.get("fgsm_n") or "all") if get_path(r, ("metrics", "fgsm")) else "—",
                    str(post.get("members", "—")),
                    str(data.get("n_train", "—")),
                    str(data.get("n_test", "—")),
                    ", ".join(f"{k} {v}" for k, v in n_ood.items()) or "—",
                    "yes" if view.verified(t) else "**NO**",
                ]
            )
    if not rows:
        return
    doc.table(
        [
            "task (settings)",
            "method",
            "seeds",
            "epochs",
            "batch",
            "test samples",
            "FGSM samples",
            "FGSM points",
            "members",
            "n train",
            "n test",
            "n OOD",
            "data verified",
        ],
        rows,
        "Settings of the runs (the first seed's; every run records its full config). The "
        "paper: 100 posterior samples at test time, 10 ensemble members on MNIST, 5 on "
        "CIFAR; the authors' code trains MNIST 100 epochs." + view.data_label(view.tasks()),
    )


def convergence(doc: Doc, view: ReportView) -> None:
    """The convergence criterion and each run's verdict."""
    doc.h(2, "Convergence")
    w = S.CONVERGENCE_TOL
    doc.p(
        "Criterion: the mean training objective (per-epoch loss: NLL + KL / N, or the "
        "family's own objective), and the mean of its KL term where it has one, over the "
        f"last tenth of the epochs may be at most {100 * w:g}% below the mean over the "
        "tenth before, the fall taken relative to the last tenth's mean (one epoch each for "
        "fewer than 20 epochs: with so few epochs the test is weak). A run that fails it "
        "is a snapshot of a training still under way: it is marked † in every table and "
        "figure, and cannot back an 'agrees'."
    )
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            for r in view.runs_for(t, m):
                c = view.convergence(r)
                n = len(get_path(r, ("train_log", "loss")) or [])
                rows.append(
                    [view.name(m), view.task_name(t), str(r.get("seed", "")), str(n), c.label()]
                )
    bad = sum(1 for r in rows if r[-1].startswith("NO"))
    doc.table(
        ["method", "task", "seed", "epochs", "converged (relative fall)"],
        rows,
        f"{bad} of {len(rows)} runs are not converged by this criterion."
        + view.data_label(view.tasks()),
    )


def provenance(doc: Doc, view: ReportView) -> None:
    """The data files read, their checksums, and a warning for unverified data."""
    doc.h(2, "Data provenance")
    files: dict[tuple[Any, ...], dict[str, Any]] = {}
    used_by: dict[tuple[Any, ...], set[str]] = defaultdict(set)
    notes: dict[str, None] = {}
    for r in view.runs:
        data = r.get("data") or {}
        for f in data.get("files") or []:
            key = (f.get("dataset"), f.get("file"), f.get("md5"))
            files.setdefault(key, f)
            used_by[key].add(r["task"])
        for n in data.get("notes") or []:
            notes[str(n)] = None
    unverified = [r for r in view.runs if get_path(r, ("data", "verified")) is not True]
    if unverified:
        tasks = sorted({r["task"] for r in unverified})
        label = "; ".join(
            CIFAR_UNVERIFIED if t.startswith("cifar") else view.task_name(t) for t in tasks
        )
        doc.warn(
            f"{len(unverified)} of {len(view.runs)} runs were made from data that did NOT "
            f"match its published checksum ({label}). Their numbers are not comparable "
            f"with the paper's; every table and figure made from them says so."
        )
    if files:
        rows = [
            [
                str(f.get("dataset", "")),
                str(f.get("file", "")),
                f"`{f.get('md5', '')}`",
                f"`{f.get('expected_md5', '')}`",
                "yes" if f.get("verified") is True else "**NO**",
                ", ".join(sorted(used_by[key])),
            ]
            for key, f in files.items()
        ]
        doc.table(
            ["dataset", "file", "md5", "expected md5", "verified", "tasks"],
            rows,
            "Data files read by the runs and whether their md5 matched the published one.",
        )
    else:
        doc.p("No data files recorded (synthetic data only).")
    if notes:
        doc.p("Notes from the data loaders:")
        doc.items(list(notes))


#: Said of an interval that ``uqbench report --test-noise`` widened.
_NOISE_SHARED = " with the test set's noise they share"
_NOISE_TOO = f" (over seeds,{_NOISE_SHARED} where it can be had)"
#: How the test set's noise enters an interval over seeds.
_NOISE_HOW = (
    "(the covariance of two seeds' values over bootstrap resamples of the shared test "
    "examples, the same resample for every seed and method; for a mean over examples, such "
    "as the error, the NLL or an FGSM accuracy, that covariance in closed form, to first "
    "order, without the resampling's Monte Carlo error) to the seeds' own variance, "
    "with the seeds' t quantile (`uqbench.stats.t_with_test_noise`); where each seed draws "
    "its own test set (the toy task) it is about 0; where seeds score different subsets of "
    "one pool (CIFAR-5's 2,000 of 5,000 test images), they are paired image by image through "
    "each image's saved position in its data set (a Poisson bootstrap over the pool's images, "
    "`uqbench.stats.Pooled`)"
)


def _noise_how(view: ReportView) -> str:
    """:data:`_NOISE_HOW`, and which tasks' runs saved no positions (paired by order)."""
    unpaired = C.unpaired_tasks(view)
    if not unpaired:
        return _NOISE_HOW
    names = ", ".join(view.task_name(t) for t in unpaired)
    return (
        f"{_NOISE_HOW}. Runs of {names} here saved no positions and are paired by order: "
        "right where every seed scores the same examples (a whole test set), an underestimate "
        "of about 0 where seeds score different subsets (`python -m uqbench.migrate` adds "
        "the positions)"
    )


def _widened(view: ReportView) -> bool:
    """Whether ``--test-noise`` widens intervals here: asked for, 2+ seeds, saved outputs."""
    return view.test_noise and view.n_seeds() >= 2 and view.has_outputs()


def _table_methods(view: ReportView, tasks: list[str]) -> list[str]:
    present: set[str] = set()
    for t in tasks:
        present |= set(view.methods(t))
    rest = sorted(present - set(PAPER_METHODS) - {"dropout-learned"})
    extra = (["dropout-learned"] if "dropout-learned" in present else []) + rest
    return [m for m in PAPER_METHODS if m in present or any(t in TABLE2 for t in tasks)] + extra


def _cells(view: ReportView, task: str, methods: list[str], stat: C.Stat, digits: int) -> list[str]:
    """One cell per method: mean with its 95% interval, **bold** for a resolved best,
    † for a method with an unconverged run; — where it did not run."""
    top, resolved = C.best(view, task, methods, stat)
    out = []
    for m in methods:
        iv = C.interval(view, task, m, stat)
        if iv is None:
            out.append("—")
            continue
        text = interval_text(iv, digits)
        if resolved and m == top:
            text = f"**{text}**"
        out.append(text + (" †" if view.unconverged(task, m) else ""))
    return out


def _declared_cells(
    view: ReportView, task: str, methods: list[str], metric: catalog.MetricDef
) -> list[str]:
    """:func:`_cells` of a declared metric; no best mark where the metric has no ranked
    direction (an entropy on the test set)."""
    stat = C.metric_stat(metric.name)
    if metric.better is not None and metric.ranked:
        return _cells(view, task, methods, stat, metric.digits)
    return _plain_cells(view, task, methods, stat, metric.digits)


def _plain_cells(
    view: ReportView, task: str, methods: list[str], stat: C.Stat, digits: int
) -> list[str]:
    """One cell per method: mean with its 95% interval, no best mark; — where it did not run."""
    out = []
    for m in methods:
        iv = C.interval(view, task, m, stat)
        out.append("—" if iv is None else interval_text(iv, digits))
    return out


def _stats_note(view: ReportView, tasks: list[str]) -> str:
    """Caption sentence saying how the intervals of ``tasks`` were made, and what is missing."""
    seeds = max((view.n_seeds(t) for t in tasks), default=0)
    if seeds >= 2 and _widened(view):
        how = (
            f"mean ± half-width of the 95% interval over seeds (up to {seeds}), widened by the "
            "test set's noise the seeds share where the statistic can be recomputed from the "
            "runs' saved per-example outputs (else over seeds alone); best marks from paired "
            "per-seed differences, widened the same way"
        )
    elif seeds >= 2:
        how = (
            f"mean ± half-width of the 95% t-interval over seeds (up to {seeds}); "
            "best marks from paired per-seed differences"
        )
    elif any(view.has_outputs(t) for t in tasks):
        how = (
            "one seed: value [95% bootstrap interval over test examples]; best marks from "
            "paired bootstraps over test examples (test-set noise only, not training noise)"
        )
    else:
        how = (
            "ONE SEED and no saved per-example outputs: no interval can be given, so no "
            "value is marked best"
        )
    return (
        f"Ours: {how}. **Bold** = best and resolved (its 95% interval of the difference to "
        "every other method excludes 0; no correction for the many comparisons); "
        "† = a run not converged (section Convergence)."
    )


def table2(doc: Doc, view: ReportView) -> None:
    """The paper's Table 2 (test error) beside ours."""
    doc.h(2, "Table 2: test error (%)")
    tasks = view.tasks("classification")
    if not tasks:
        doc.p("No classification task ran.")
        return
    methods = _table_methods(view, tasks)
    rows = []
    for t in tasks:
        rows.append(
            [f"{view.task_name(t)} (ours)"]
            + _cells(view, t, methods, C.STATS["error_pct"], ERROR_DIGITS)
        )
        if t in TABLE2:
            rows.append(
                [f"{TABLE2_ROWS[t]} (paper)"]
                + [fmt(TABLE2[t].get(m), 1) if m in TABLE2[t] else "—" for m in methods]
            )
    doc.table(
        ["task"] + [view.name(m) for m in methods],
        rows,
        "Test error (%) of the MC predictive. "
        + _stats_note(view, tasks)
        + " Paper: Louizos & Welling 2017, Table 2. — = not run."
        + view.data_label(tasks),
    )


def calibration(doc: Doc, view: ReportView) -> None:
    """Per task: calibration and OOD detection (classification) or held-out fit (toy)."""
    doc.h(2, "Calibration and out-of-distribution detection")
    for t in view.tasks("classification"):
        oods = view.ood_sets(t)
        methods = view.methods(t)
        h_max = math.log(view.n_classes(t) or 10)
        columns: list[tuple[str, C.Stat, int]] = [
            (header, C.metric_stat(m.name), m.digits)
            for m, header in catalog.table_columns("calibration")
        ]
        for o in oods:
            columns += [
                (header.format(set=o), C.metric_stat(m.name, o, h_max), m.digits)
                for m, header in catalog.table_columns("calibration_ood")
            ]
        cols = [_cells(view, t, methods, stat, d) for _, stat, d in columns]
        rows = [
            [view.name(m), str(len(view.runs_for(t, m)))] + [c[i] for c in cols]
            for i, m in enumerate(methods)
        ]
        doc.h(3, view.task_name(t))
        doc.table(
            ["method", "seeds"] + [h for h, _, _ in columns],
            rows,
            f"{view.task_name(t)}. NLL, ECE (15 bins), Brier, FPR95: lower is better; AUROC "
            "(OOD positive, entropy as score): higher is better; FPR95 (in+) is the "
            "literature's (Hendrycks & Gimpel; OpenOOD): share of OOD points accepted when "
            "95% of in-distribution points are, with in-distribution positive; FPR95 (OOD+) "
            "flags 95% of OOD points and counts flagged test points. median H = median "
            "predictive entropy in nats (on OOD data higher is better; not marked). "
            + _stats_note(view, [t])
            + view.data_label([t]),
        )
    for t in view.tasks("regression"):
        methods = view.methods(t)
        stat_cols = [
            (header, C.metric_stat(m.name), m.digits)
            for m, header in catalog.table_columns("regression")
        ]
        cols = [_cells(view, t, methods, stat, d) for _, stat, d in stat_cols]
        cols += [_plain_cells(view, t, methods, band_stat(w), 2) for w in ("inside", "outside")]
        rows = []
        for i, m in enumerate(methods):
            rows.append([view.name(m), str(len(view.runs_for(t, m)))] + [c[i] for c in cols])
        doc.h(3, view.task_name(t))
        doc.table(
            ["method", "seeds"] + [h for h, _, _ in stat_cols] + ["mean std in", "mean std out"],
            rows,
            f"{view.task_name(t)}: held-out points inside / outside the training range. "
            "loglik = mean Gaussian predictive log density (higher is better); cover 3σ = "
            "share within mean ± 3 std (0.997 if calibrated); mean std on the plotting "
            "grid inside / outside the run's own training inputs' range (not ranked). "
            + _stats_note(view, [t])
            + view.data_label([t]),
        )


class _Figures:
    """The figures of a section: each drawn to ``<fig_dir>/<key>.png`` and, when drawn
    (its data were there), added to the document with its caption."""

    def __init__(self, doc: Doc, view: ReportView, fig_dir: Path) -> None:
        self.doc, self.view, self.fig_dir = doc, view, fig_dir
        self.made: dict[str, Path] = {}

    def add(self, name: str, draw: Callable[..., Path | None], *of: str, caption: str) -> None:
        """Draw ``draw(view, *of, path)`` under the key ``slug(name, *of)``."""
        key = slug(name, *of)
        path = draw(self.view, *of, self.fig_dir / f"{key}.png")
        if path is not None:
            self.made[key] = path
            self.doc.figure(path, f"figures/{path.name}", caption)


def figures(doc: Doc, view: ReportView, fig_dir: Path) -> dict[str, Path]:
    """The paper's figures: entropy ECDFs, FGSM, toy bands, reliability diagrams."""
    doc.h(2, "Figures")
    figs = _Figures(doc, view, fig_dir)
    cls_tasks = view.tasks("classification")
    for t in cls_tasks:
        for o in view.ood_sets(t):
            paper = PAPER_FIGURE.get("notmnist" if "notmnist" in o.lower() else t, "")
            figs.add(
                "ecdf",
                F.ecdf_figure,
                t,
                o,
                caption=f"Empirical CDF of the predictive entropy on {o} for models trained on "
                f"{view.task_name(t)}"
                + (f" (paper {paper})" if paper else "")
                + "; lower curves (fewer confident predictions) are better."
                + view.data_label([t]),
            )
    for t in cls_tasks:
        paper = {"mnist": " (paper Figure 4)", "cifar5": " (paper Figure 5)"}.get(t, "")
        figs.add(
            "fgsm",
            F.fgsm_figure,
            t,
            caption=f"FGSM on {view.task_name(t)}{paper}: accuracy (solid, left axis) and mean "
            "predictive entropy (dashed, right axis) against the perturbation size."
            + view.data_label([t]),
        )
    for t in view.tasks("regression"):
        toy = t == F.TOY_TASK
        paper, truth = (" (paper Figure 6)", "the true x³ curve (dashed) ") if toy else ("", "")
        figs.add(
            "toy-bands",
            F.toy_figure,
            t,
            caption=f"{view.task_name(t)}{paper}: predictive mean ± 3 std (noise included) per "
            f"posterior, training points, {truth}and the training range (shaded)."
            + view.data_label([t]),
        )
    for t in cls_tasks:
        figs.add(
            "reliability",
            F.reliability_figure,
            t,
            caption=f"Reliability diagrams on the {view.task_name(t)} test set (15 equal-width "
            "confidence bins, pooled over seeds; the number above each bar is its count of "
            "test points); bars on the diagonal are calibrated. † = a run not converged."
            + view.data_label([t]),
        )
    if not figs.made:
        doc.p("No figure: no run produced curves.")
    return figs.made


# -- beyond the paper: OOD scores, selective prediction, dataset shift (issue 18) ---------------


def _ood_scores_table(doc: Doc, view: ReportView, t: str) -> None:
    """Per method, each OOD set and the mean over sets, with every OOD score."""
    oods = view.ood_sets(t)
    if not oods:
        return
    columns = catalog.table_columns("ood_scores")
    digits = [d.digits for d, _ in columns]
    rows = []
    for m in view.methods(t):
        per_set = []
        for o in oods:
            vals = [view.scalar(t, m, "ood", o, *d.path) for d, _ in columns]
            per_set.append(vals)
            rows.append([view.name(m), o] + [fmt(v, n) for v, n in zip(vals, digits, strict=True)])
        if len(oods) > 1:
            means = []
            for i in range(len(columns)):
                col = [vals[i] for vals in per_set]
                means.append(None if any(v is None for v in col) else float(np.mean(col)))
            cells = [fmt(v, n) for v, n in zip(means, digits, strict=True)]
            rows.append([view.name(m), "**mean over sets**"] + cells)
    uses = "; ".join(f"{h} uses {d.note}" for d, h in columns)
    doc.table(
        ["method", "OOD set"] + [h for _, h in columns],
        rows,
        f"{view.task_name(t)}: OOD detection by score, means over seeds; higher is better for "
        f"all. {uses}. MI = H[E p] - E[H[p]] over posterior samples." + view.data_label([t]),
    )


def beyond_paper(doc: Doc, view: ReportView, fig_dir: Path) -> dict[str, Path]:
    """Section on epistemic/aleatoric OOD scores, AUPR, selective prediction and shift."""
    figs = _Figures(doc, view, fig_dir)
    tasks = view.tasks("classification")
    if not tasks:
        return figs.made
    doc.h(2, "Beyond the paper: OOD scores, selective prediction, dataset shift")
    for t in tasks:
        doc.h(3, view.task_name(t))
        _ood_scores_table(doc, view, t)
        figs.add(
            "ecdf-mean",
            F.mean_ecdf_figure,
            t,
            caption=f"Entropy ECDF averaged over the OOD sets of {view.task_name(t)}; lower is "
            "better.",
        )
        columns = catalog.table_columns("beyond")
        methods = view.methods(t)
        by_column = [_declared_cells(view, t, methods, d) for d, _ in columns]
        rows = [[view.name(m)] + [cells[i] for cells in by_column] for i, m in enumerate(methods)]
        if any(cell != "—" for row in rows for cell in row[1:]):
            doc.table(
                ["method"] + [header for _, header in columns],
                rows,
                f"{view.task_name(t)}: AURC = area under the risk-coverage curve by the "
                "predictive's top probability (lower is better); MI / E[H] test = mean "
                "epistemic / aleatoric entropy on the test set (nats); acc rotated = mean "
                "accuracy over the rotation angles, acc corrupted = over corruptions and "
                "severities (higher is better; — = not evaluated). "
                + _stats_note(view, [t])
                + view.data_label([t]),
            )
        name = view.task_name(t)
        for key, draw, caption in (
            (
                "risk-coverage",
                F.risk_coverage_figure,
                f"Risk-coverage curves on {name}: lower is better, chiefly at low coverage.",
            ),
            (
                "rotation",
                F.rotation_figure,
                f"Metrics of the predictive on the rotated {name} test subset against the "
                "angle (Ovadia et al. 2019, Figure 1 style).",
            ),
            (
                "corruption",
                F.severity_boxes_figure,
                f"Accuracy and ECE on the corrupted {name} test subset per severity; each box "
                "spans the corruptions (CIFAR-10-C definitions).",
            ),
        ):
            figs.add(key, draw, t, caption=caption + view.data_label([t]))
    return figs.made


def per_run(doc: Doc, view: ReportView) -> None:
    """One row per run: training and evaluation time, data verified."""
    doc.h(2, "Runs")
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            for r in view.runs_for(t, m):
                verified = get_path(r, ("data", "verified"))
                rows.append(
                    [
                        view.name(m),
                        view.task_name(t),
                        str(r.get("seed", "")),
                        fmt(finite(r.get("train_seconds")), 1),
                        fmt(finite(r.get("eval_seconds")), 1),
                        "yes"
                        if verified is True
                        else ("**NO**" if verified is False else "unknown"),
                    ]
                )
    doc.table(
        ["method", "task", "seed", "train s", "eval s", "data verified"],
        rows,
        "Every run of the suite." + view.data_label(view.tasks()),
    )


def mechanism(doc: Doc, view: ReportView) -> None:
    """Per-layer terms of q for the Gaussian families: does MNF's z do anything?"""
    families = ("ffg", "mnf")
    rows, shown = [], set()
    for t in view.tasks():
        for m in view.methods(t):
            if m not in families:
                continue
            layers: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in view.runs_for(t, m):
                for name, d in (get_path(r, ("metrics", "diagnostics", "q_layers")) or {}).items():
                    for k, x in (d or {}).items():
                        if finite(x) is not None:
                            layers[name][k].append(float(x))
            for name, d in layers.items():
                mean = {k: float(np.mean(v)) for k, v in d.items()}
                shown.add(t)
                rows.append(
                    [view.task_name(t), view.name(m), name]
                    + [
                        fmt(mean.get(k), 3)
                        if k not in ("kl_w", "log_q", "log_r", "kl")
                        else fmt(mean.get(k), 1)
                        for k in (
                            "weight_std",
                            "z_mean",
                            "z_spread",
                            "z_spread_rel",
                            "log_q",
                            "log_r",
                            "kl_w",
                            "kl",
                        )
                    ]
                )
    if not any(m in families for t in view.tasks() for m in view.methods(t)):
        return
    doc.h(2, "MNF mechanism: q(z) per layer, MNF against FFG")
    if not rows:
        doc.p(
            "Not recorded: these FFG / MNF runs were made before their per-layer diagnostics "
            "(spread of z, log q(z), log r(z|W), KL split) were recorded; a rerun records them."
        )
        return
    doc.table(
        [
            "task",
            "method",
            "layer",
            "mean σ of q(W|z)",
            "mean z",
            "spread of z",
            "spread / mean z",
            "log q(z)",
            "log r(z|W)",
            "KL(q(W|z)‖p)",
            "KL bound",
        ],
        rows,
        "Means over seeds of 32 draws after training. FFG is MNF with z = 1 (no z terms). "
        "KL bound = KL(q(W|z)‖p) + log q(z) − log r(z|W) (eq. 13-16, in nats, for the whole "
        "layer). A spread of z near 0 means z is a fixed rescaling and MNF is FFG in effect."
        + view.data_label([t for t in view.tasks() if t in shown]),
    )


def sparsity(doc: Doc, view: ReportView) -> None:
    """FFLU's share of pruned weights per layer, beside the paper's."""
    blocks = []
    for t in view.tasks():
        for m in view.methods(t):
            layers: dict[str, list[float]] = defaultdict(list)
            for r in view.runs_for(t, m):
                sp = get_path(r, ("metrics", "diagnostics", "sparsity"))
                if isinstance(sp, dict):
                    for layer, x in sp.items():
                        if finite(x) is not None:
                            layers[layer].append(float(x))
            if layers:
                blocks.append((t, m, {k: float(np.mean(v)) for k, v in layers.items()}))
    if not blocks:
        return
    doc.h(2, "FFLU sparsity")
    for t, m, layers in blocks:
        names = list(layers)
        rows = [[f"{view.name(m)} (ours)"] + [fmt(100 * layers[n], 1) for n in names]]
        paper = FFLU_SPARSITY_PCT.get(t)
        if m == "fflu" and paper:
            if len(paper) == len(names):
                rows.append(["paper"] + [fmt(x, 1) for x in paper])
            else:
                doc.p(f"Paper ({view.task_name(t)}): " + ", ".join(f"{x:g}%" for x in paper))
        doc.table(
            ["", *names],
            rows,
            f"{view.task_name(t)}: share (%) of weights with log σ² − log μ² ≥ 5, per "
            "layer, mean over seeds." + view.data_label([t]),
        )


def against_paper(
    doc: Doc,
    view: ReportView,
    figures: dict[str, Path],
    results: dict[str, Any],
    *,
    progress: bool = False,
) -> None:
    """Each qualitative claim of the paper's Section 4 with its verdict here.

    The report's slow part (each verdict is computed twice, the second time with the test
    set's noise): ``progress`` shows a bar over the claims on stderr.
    """
    from tqdm.auto import tqdm

    doc.h(2, "Against the paper")
    doc.p(
        "Each qualitative claim of the paper's Section 4, checked on these results (means "
        "over seeds). The thresholds that turn words into numbers are in `uqbench/paper.py`."
    )
    discussion = results.get("discussion") or {}
    counts: dict[str, int] = defaultdict(int)
    noisy_counts: dict[str, int] = defaultdict(int)
    items = []
    bar = tqdm(CLAIMS, desc="report: claims", unit="claim", leave=False, disable=not progress)
    for claim in bar:
        verdict = claim.verdict(view)
        counts[verdict.status] += 1
        noisy = None
        runs = [r for m in view.methods(claim.task) for r in view.runs_for(claim.task, m)]
        has_outputs = runs and all(view.outputs(r) is not None for r in runs)
        if has_outputs and not view.test_noise:  # the noise needs them; has it already
            with view.with_test_noise():
                noisy = claim.verdict(view)
            noisy_counts[noisy.status] += 1
        ours = sorted(k for k in figures if k.startswith(claim.plot))
        where = claim.figure + (
            " (ours: " + ", ".join(f"figures/{figures[k].name}" for k in ours) + ")" if ours else ""
        )
        label = view.data_label([claim.task]) if claim.task in view.tasks() else ""
        text = (
            f"[{verdict.status}] `{claim.id}` (Section {claim.section}; {where}): "
            f"{claim.text} Numbers: {verdict.evidence}.{label}"
        )
        if noisy is not None and noisy.status == verdict.status:
            text += f" With the test set's noise too: {noisy.status}."
        elif noisy is not None:
            text += f" With the test set's noise too: **{noisy.status}** ({noisy.evidence})."
        if isinstance(discussion, dict) and discussion.get(claim.id):
            text += _discussion_note(view, claim.task, verdict.status, discussion[claim.id])
        items.append(text)
    doc.p(
        f"Summary: {counts['agrees']} agree, {counts['differs']} differ, "
        f"{counts['inconclusive']} inconclusive, {counts['not run']} not run. A claim agrees "
        "or differs only when the differences it states are resolved at 95% (paired over "
        f"seeds{_NOISE_SHARED if _widened(view) else ''}, or over test examples where each "
        "method ran one seed) and, to agree, every run it rests on converged; a claim of "
        "k > 1 conditions differs only when one is still resolved against it at 1 − 0.05/k "
        "(Holm's correction)."
    )
    if _widened(view):
        doc.p(
            "The test set's noise in these verdicts: every seed is scored on one test set, "
            "itself a sample, so the seeds share its noise (examples that every seed's "
            "models find hard or easy), which their spread cannot show. It is added "
            f"{_noise_how(view)}; a statistic that cannot be recomputed from per-example "
            "outputs, or a run that saved none, keeps the interval over seeds alone (the "
            "claim's numbers say which)."
        )
    if noisy_counts:
        n = sum(noisy_counts.values())
        doc.p(
            f"With the test set's noise too ({n} claims whose runs saved per-example outputs): "
            f"{noisy_counts['agrees']} agree, {noisy_counts['differs']} differ, "
            f"{noisy_counts['inconclusive']} inconclusive, {noisy_counts['not run']} not run. "
            "The intervals over seeds above leave out the test-set noise common to all "
            "seeds, which are scored on one test set, itself a sample: examples that every "
            f"seed's models find hard or easy. This check adds it {_noise_how(view)}. A verdict "
            "that changes here rests on a difference about as large as the test set's own "
            "sampling noise."
        )
    doc.items(items)


#: Human-written notes per claim id beside results.json (TOML): a table per claim with
#: ``text``, the ``verdict`` it was written for and the ``numbers`` it discusses
#: (``"task/method/stat" = value``, stat as in :func:`uqbench.paper.stat_named`).
DISCUSSION_FILE = "discussion.toml"
#: A note's number still matches when within this share of it (or 0.0006 absolute).
NOTE_TOLERANCE = 0.005


def _discussion_note(view: ReportView, task: str, status: str, entry: Any) -> str:
    """The note as report text, flagged STALE when its verdict or numbers no longer match."""
    if not isinstance(entry, dict):
        return (
            " Discussion (records no verdict or numbers, so it cannot be checked against "
            f"these results): {entry}"
        )
    problems = []
    if entry.get("verdict") and entry["verdict"] != status:
        problems.append(f"written for '{entry['verdict']}', now '{status}'")
    for key, want in (entry.get("numbers") or {}).items():
        t, _, rest = str(key).partition("/")
        method, _, name = rest.partition("/")
        try:
            stat = stat_named(name, math.log(view.n_classes(t) or 10))
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        iv = C.interval(view, t, method, stat)
        if iv is None:
            problems.append(f"{key} is not in these results")
        elif finite(want) is None or abs(iv.value - want) > max(NOTE_TOLERANCE * abs(want), 6e-4):
            problems.append(f"{key} was {want}, now {iv.value:.4g}")
    text = str(entry.get("text", ""))
    if problems:
        return f" Discussion **[STALE: {'; '.join(problems)}]**: {text}"
    return f" Discussion: {text}"


def with_discussion(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add the notes of ``path`` (if it exists) as ``results["discussion"]``."""
    if "discussion" in results or not path.exists():
        return results
    try:
        notes = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ResultsError(f"{path}: not valid TOML: {exc}") from None
    return {**results, "discussion": notes}
