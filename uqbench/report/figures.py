"""The report's figures: one function per figure, each drawing from a :class:`ReportView` and
writing one PNG (None when no method has the data it plots).

Figures use Agg directly with fixed margins (fast; no pyplot state). A figure of a task run on
unverified data carries the label inside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from uqbench.report.style import ReportView, fmt
from uqbench.report.view import get_path
from uqbench.results import unique_tmp

#: Rows of the shift figures: (metric key, axis label).
SHIFT_AXES = (
    ("accuracy", "accuracy"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("mean_entropy", "mean entropy (nats)"),
)


def new_figure(
    n_panels: int = 1,
    ncols: int = 1,
    panel: tuple[float, float] = (6.4, 4.2),
    right_in: float = 0.25,
    bottom_in: float = 0.6,
) -> tuple[Figure, np.ndarray]:
    """An Agg figure of ``n_panels`` axes with fixed margins (in inches; fast, unlike
    constrained layout). ``right_in`` leaves room for a twin axis' label."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    width, height = panel[0] * ncols, panel[1] * nrows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - right_in / width,
        bottom=bottom_in / height,
        top=1 - 0.45 / height,
        wspace=0.32,
        hspace=0.55 if nrows > 1 else 0.2,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def save_figure(fig: Figure, path: Path, view: ReportView | None = None, task: str = "") -> Path:
    """Write the PNG atomically; a figure of a task run on unverified data says so inside it."""
    label = view.figure_label(task) if view is not None and task else None
    if label is not None:
        fig.text(
            0.5, 0.995, label, ha="center", va="top", fontsize=9, color="#B3261E", weight="bold"
        )
    tmp = unique_tmp(path)
    try:
        fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


Curve = tuple[np.ndarray, np.ndarray]


def line_figure(
    view: ReportView,
    task: str,
    path: Path,
    curve: Callable[[str], Curve | None],
    *,
    label: Callable[[str], str] | None = None,
    mark: Callable[[Axes], None] | None = None,
    **axes: Any,
) -> Path | None:
    """One line per method of ``task`` that has data, in the method's colour, saved to ``path``.

    ``curve(method)`` gives its (x, y), or None to leave it out; ``label(method)`` its legend
    entry (default: its name); ``mark(ax)`` draws reference marks after the lines; ``axes``
    are the axes' settings (limits, labels, title). None when no method has data.
    """
    fig, (ax,) = new_figure()
    drawn = 0
    for m in view.methods(task):
        xy = curve(m)
        if xy is None:
            continue
        ax.plot(*xy, color=view.color(m), label=(label or view.name)(m), lw=2)
        drawn += 1
    if not drawn:
        return None
    if mark is not None:
        mark(ax)
    ax.set(**axes)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, view, task)


def ecdf_figure(view: ReportView, task: str, ood: str, path: Path) -> Path | None:
    """Empirical CDF of the predictive entropy on the OOD set ``ood``, one line per method."""
    k = view.n_classes(task) or 10
    h_max = math.log(k)
    x_max = 2.5 if k == 10 else h_max * 2.5 / math.log(10)

    def curve(m: str) -> Curve | None:
        grid = view.curve(task, m, "ood", ood, "entropy_ecdf", "grid")
        cdf = view.curve(task, m, "ood", ood, "entropy_ecdf", "cdf")
        if grid is None or cdf is None or len(grid) != len(cdf):
            return None
        return np.append(grid, x_max), np.append(cdf, cdf[-1])

    def mark(ax: Axes) -> None:
        ax.axvline(h_max, color="0.5", ls=":", lw=1)
        ax.text(h_max, 0.02, f" ln {k}", color="0.4", fontsize=8)

    return line_figure(
        view,
        task,
        path,
        curve,
        label=lambda m: view.label(task, m),
        mark=mark,
        xlim=(0, x_max),
        ylim=(0, 1.02),
        xlabel="predictive entropy (nats)",
        ylabel="share of examples with entropy <= x",
        title=f"Entropy ECDF on {ood} ({view.task_name(task)} models)",
    )


def fgsm_figure(view: ReportView, task: str, path: Path) -> Path | None:
    """FGSM accuracy (solid, left axis) and mean entropy (dashed, right axis) against eps."""
    k = view.n_classes(task) or 10
    fig, (ax,) = new_figure(panel=(7.6, 5.0), right_in=0.8, bottom_in=1.1)
    ax2 = ax.twinx()
    drawn = 0
    for m in view.methods(task):
        eps = view.curve(task, m, "fgsm", "eps")
        acc = view.curve(task, m, "fgsm", "accuracy")
        ent = view.curve(task, m, "fgsm", "mean_entropy")
        if eps is None or acc is None or ent is None or not (len(eps) == len(acc) == len(ent)):
            continue
        ax.plot(eps, acc, color=view.color(m), lw=2, marker="o", ms=3, label=view.label(task, m))
        ax2.plot(eps, ent, color=view.color(m), lw=2, ls="--")
        drawn += 1
    if not drawn:
        return None
    ax.set(
        ylim=(0, 1.08),
        xlabel="FGSM perturbation eps (input units)",
        ylabel="accuracy (solid)",
        title=f"FGSM on {view.task_name(task)}: accuracy (solid), mean entropy (dashed)",
    )
    ax2.set(
        ylim=(0, math.log(k) * 1.08),
        ylabel="mean predictive entropy, nats (dashed)",
    )
    ax2.axhline(math.log(k), color="0.5", ls=":", lw=1)
    ax2.text(ax.get_xlim()[0], math.log(k), f" max = ln {k}", color="0.4", fontsize=8, va="bottom")
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color="black", lw=2, label="accuracy"),
        Line2D([], [], color="black", lw=2, ls="--", label="mean entropy"),
    ]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    ax.grid(alpha=0.3)
    return save_figure(fig, path, view, task)


#: The paper's toy task, whose figure shows its true function x^3.
TOY_TASK = "toy-cubic"


def toy_figure(view: ReportView, task: str, path: Path) -> Path | None:
    """Predictive mean +- 3 std of a 1-D regression (averaged over seeds on the common grid),
    one panel per method, with every seed's own training points (the toy task: and x^3)."""
    methods = [m for m in view.methods(task) if view.curve(task, m, "bands", "x") is not None]
    if not methods:
        return None
    fig, axes = new_figure(len(methods), ncols=min(4, len(methods)), panel=(4.2, 3.6))
    for ax, m in zip(axes, methods, strict=True):
        x = view.curve(task, m, "bands", "x")
        mean = view.curve(task, m, "bands", "mean")
        std = view.curve(task, m, "bands", "std")
        # Each seed draws its own training inputs: its points as they are, never averaged.
        seeds = [_train_points(r) for r in view.runs_for(task, m)]
        seeds = [pts for pts in seeds if pts is not None]
        if seeds:
            lo = max(float(xs.min()) for xs, _ in seeds)
            hi = min(float(xs.max()) for xs, _ in seeds)
            if lo < hi:
                ax.axvspan(lo, hi, color="0.92", zorder=0, label="training range (every seed)")
        if task == TOY_TASK:
            ax.plot(x, x**3, color="black", lw=1, ls="--", label="true $x^3$")
        if mean is not None and std is not None and len(mean) == len(x) == len(std):
            ax.fill_between(
                x,
                mean - 3 * std,
                mean + 3 * std,
                color=view.color(m),
                alpha=0.3,
                label="mean ± 3 std",
            )
            ax.plot(x, mean, color=view.color(m), lw=2, label="predictive mean")
        if seeds:
            ax.scatter(
                np.concatenate([xs for xs, _ in seeds]),
                np.concatenate([ys for _, ys in seeds]),
                s=6 if len(seeds) > 1 else 12,
                color="black",
                alpha=0.5 if len(seeds) > 1 else 1.0,
                zorder=3,
                label="training points" + (f" ({len(seeds)} seeds)" if len(seeds) > 1 else ""),
            )
        if task == TOY_TASK:
            ax.set_ylim(-300, 300)
        ax.set(
            xlim=(x.min(), x.max()),
            xlabel="x",
            ylabel="y",
            title=view.label(task, m),
        )
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7)
    return save_figure(fig, path, view, task)


def _train_points(run: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """One run's toy training inputs and targets (``metrics.train_points``), if recorded."""
    pts = (run.get("metrics") or {}).get("train_points") or {}
    xs, ys = pts.get("x"), pts.get("y")
    if not (isinstance(xs, list) and isinstance(ys, list) and xs and len(xs) == len(ys)):
        return None
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def reliability_figure(view: ReportView, task: str, path: Path) -> Path | None:
    """Reliability diagram per method (pooled over seeds), bin counts above the bars."""
    methods = [m for m in view.methods(task) if view.reliability(task, m) is not None]
    if not methods:
        return None
    fig, axes = new_figure(len(methods), ncols=min(4, len(methods)), panel=(3.4, 3.4))
    for ax, m in zip(axes, methods, strict=True):
        rel = view.reliability(task, m)
        assert rel is not None
        width = rel["upper"] - rel["lower"]
        ok = rel["count"] > 0
        ax.bar(
            rel["lower"][ok],
            rel["accuracy"][ok],
            width=width[ok],
            align="edge",
            color=view.color(m),
            edgecolor="white",
            alpha=0.85,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], color="0.3", ls="--", lw=1, label="calibrated")
        ax.plot(rel["confidence"][ok], rel["accuracy"][ok], "k.", ms=4, label="(conf, acc)")
        ece = view.scalar(task, m, "ece")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence (top probability)",
            ylabel="accuracy",
            title=f"{view.label(task, m)} (ECE {fmt(ece)})",
        )
        bars = zip(rel["lower"][ok], width[ok], rel["accuracy"][ok], rel["count"][ok], strict=True)
        for lo, w, a, n in bars:
            ax.text(
                lo + w / 2,
                min(a, 0.9) + 0.02,
                f"{int(n)}",
                ha="center",
                fontsize=5,
                rotation=90,
                va="bottom",
                color="0.2",
            )
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7)
    return save_figure(fig, path, view, task)


# -- sections -----------------------------------------------------------------------------------


def mean_ecdf_figure(view: ReportView, t: str, path: Path) -> Path | None:
    """Entropy ECDF averaged over the OOD sets of ``t`` (only with more than one set)."""
    oods = view.ood_sets(t)
    if len(oods) < 2:
        return None

    def curve(m: str) -> Curve | None:
        grids = [view.curve(t, m, "ood", o, "entropy_ecdf", "grid") for o in oods]
        cdfs = [view.curve(t, m, "ood", o, "entropy_ecdf", "cdf") for o in oods]
        if any(c is None for c in cdfs) or len({len(c) for c in cdfs}) != 1:
            return None
        return grids[0], np.mean(cdfs, axis=0)

    return line_figure(
        view,
        t,
        path,
        curve,
        ylim=(0, 1.02),
        xlabel="predictive entropy (nats)",
        ylabel="share of examples with entropy <= x",
        title=f"Entropy ECDF, mean over {len(oods)} OOD sets ({view.task_name(t)} models)",
    )


def risk_coverage_figure(view: ReportView, t: str, path: Path) -> Path | None:
    """Risk-coverage curve of selective prediction, one line per method."""

    def curve(m: str) -> Curve | None:
        cov = view.curve(t, m, "risk_coverage", "coverage")
        risk = view.curve(t, m, "risk_coverage", "risk")
        if cov is None or risk is None or len(cov) != len(risk):
            return None
        return cov, risk

    return line_figure(
        view,
        t,
        path,
        curve,
        xlim=(0, 1),
        xlabel="coverage (share of test points kept, most confident first)",
        ylabel="risk (error rate among kept points)",
        title=f"Risk-coverage on {view.task_name(t)}",
    )


def rotation_figure(view: ReportView, t: str, path: Path) -> Path | None:
    """Each shift metric against the rotation angle, one line per method (Ovadia et al.)."""
    fig, axes = new_figure(len(SHIFT_AXES), ncols=3, panel=(4.6, 3.4))
    drawn = 0
    for m in view.methods(t):
        angle = view.curve(t, m, "shift_rotation", "angle")
        if angle is None:
            continue
        for ax, (key, label) in zip(axes, SHIFT_AXES, strict=True):
            ys = view.curve(t, m, "shift_rotation", key)
            if ys is not None and len(ys) == len(angle):
                ax.plot(angle, ys, color=view.color(m), label=view.name(m), lw=2, marker="o", ms=3)
                ax.set(xlabel="rotation (degrees)", ylabel=label)
                ax.grid(alpha=0.3)
        drawn += 1
    if not drawn:
        return None
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Rotated {view.task_name(t)} test set")
    return save_figure(fig, path, view, t)


def severity_boxes_figure(view: ReportView, t: str, path: Path) -> Path | None:
    """Accuracy and ECE per severity: one box per method over corruptions (Ovadia et al.)."""
    methods = [m for m in view.methods(t) if view.runs_for(t, m)]
    data: dict[str, dict[str, np.ndarray]] = {}
    sevs = None
    for m in methods:
        block = {}
        for key in ("accuracy", "ece"):
            per_c = {}
            for r in view.runs_for(t, m):
                sc = get_path(r.get("metrics"), ("shift_corruption",)) or {}
                sevs = sevs or sc.get("severity")
                for name, vals in (sc.get("corruptions") or {}).items():
                    per_c.setdefault(name, []).append(vals.get(key))
            if per_c:  # corruptions x severities, averaged over seeds
                block[key] = np.array([np.mean(v, axis=0) for v in per_c.values()], dtype=float)
        if block:
            data[m] = block
    if not data or not sevs:
        return None
    fig, axes = new_figure(2, ncols=2, panel=(6.4, 4.2))
    width = 0.8 / len(data)
    for ax, key in zip(axes, ("accuracy", "ece"), strict=True):
        for i, (m, block) in enumerate(data.items()):
            if key not in block:
                continue
            pos = np.arange(len(sevs)) + (i - (len(data) - 1) / 2) * width
            bp = ax.boxplot(
                [block[key][:, j] for j in range(len(sevs))],
                positions=pos,
                widths=width * 0.9,
                patch_artist=True,
                showfliers=False,
            )
            for box in bp["boxes"]:
                box.set(facecolor=view.color(m), alpha=0.7)
            ax.plot([], [], color=view.color(m), lw=6, label=view.name(m))
        ax.set_xticks(np.arange(len(sevs)), [str(s) for s in sevs])
        ax.set(xlabel="corruption severity", ylabel=key.upper() if key == "ece" else key)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Corrupted {view.task_name(t)}: boxes over corruptions")
    return save_figure(fig, path, view, t)
