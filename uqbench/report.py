"""The comparison report, written from a merged ``results.json`` alone.

:func:`write_report` needs no models and no data: every table and figure comes from the
run objects of schema.md. It writes ``report.md``, a self-contained ``report.html``
(figures embedded as base64 PNG) and the PNG figures under ``figures/``. Tasks or
methods that did not run are left out (or marked "not run"), never an error.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from uqbench import compare as C
from uqbench import stats as S
from uqbench.errors import ResultsError
from uqbench.paper import (
    CLAIMS,
    FFLU_SPARSITY_PCT,
    PAPER_COLUMNS,
    PAPER_METHODS,
    TABLE2,
    TABLE2_ROWS,
    band_stats,
    stat_named,
)
from uqbench.results import READABLE_RESULTS_SCHEMAS, unique_tmp

#: Caption label of every CIFAR table and figure made from the unverified stand-in.
CIFAR_UNVERIFIED = "CIFAR-10 (UNVERIFIED copy: JPEG-q75 stand-in)"
#: Order of tasks in tables; other tasks follow alphabetically.
TASK_ORDER = ("mnist", "cifar5", "toy-cubic")
TASK_NAMES = {"mnist": "MNIST", "cifar5": "CIFAR 5", "toy-cubic": "Toy cubic"}
#: Order of methods in tables: the paper's columns, then learned dropout, then the rest.
METHOD_ORDER = (*PAPER_METHODS, "dropout-learned")
#: Colour per method, the same in every figure: the Okabe-Ito palette (Okabe & Ito 2008),
#: designed to stay distinguishable under the common colour-vision deficiencies.
_METHOD_COLORS = {
    "mnf": "#0072B2",  # blue
    "dropout": "#E69F00",  # orange
    "ensemble": "#009E73",  # bluish green
    "ffg": "#CC79A7",  # reddish purple
    "fflu": "#D55E00",  # vermillion
    "dropout-learned": "#56B4E9",  # sky blue
    "l2": "#000000",  # black
}
_SPARE_COLORS = ("#F0E442", "#999999", "#8C510A")  # yellow, grey, brown for plug-ins
_PAPER_FIGURE = {"notmnist": "Figure 2", "cifar5": "Figure 3"}

CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1, h2, h3 { color: #123; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 .2em; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .55em; text-align: right; }
th:first-child, td:first-child, td.l { text-align: left; } th { background: #eef2f6; }
caption { caption-side: bottom; text-align: left; font-size: .85em; color: #444; padding: .3em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .85em; color: #444; }
pre, code { background: #f4f4f4; padding: .1em .3em; border-radius: 3px; }
pre { padding: .6em; overflow-x: auto; }
.warning { background: #fff1e6; border-left: 5px solid #d9480f; padding: .6em 1em;
           font-weight: bold; }
.agrees { color: #1b7a2d; font-weight: bold; } .differs { color: #b3261e; font-weight: bold; }
.notrun { color: #777; font-weight: bold; } .inconclusive { color: #8a6d00; font-weight: bold; }
"""


# -- a view over the results -----------------------------------------------------------------


def _get(d: Any, path: Iterable[str]) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _num(x: Any) -> float | None:
    """``x`` as a finite float, else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


class ResultsView:
    """Read-only access to a merged results dict, grouped by task and method.

    Scalars and curves are averaged over seeds; anything missing reads as ``None``.
    ``base_dir`` is the results directory, where runs' saved per-example outputs live
    (``runs/<run>.npz``); without it, intervals come from seeds alone.
    """

    def __init__(self, results: dict[str, Any], base_dir: Path | None = None) -> None:
        runs = results.get("runs")
        if not isinstance(runs, list):
            raise ResultsError("results have no 'runs' list; is this a merged results.json?")
        self.results = results
        self.runs = [r for r in runs if isinstance(r, dict) and "task" in r and "method" in r]
        self._by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in self.runs:
            self._by[(r["task"], r["method"])].append(r)
        for v in self._by.values():
            v.sort(key=lambda r: r.get("seed", 0) or 0)
        self._colors: dict[str, Any] = {}
        self.base_dir = Path(base_dir) if base_dir is not None else None
        #: Intervals and comparisons already computed (bootstraps are not free).
        self.cache: dict[tuple[Any, ...], Any] = {}
        self._outputs: dict[str, Any] = {}

    def outputs(self, run: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """The run's saved per-example outputs, or None (none saved, or file missing)."""
        name = run.get("predictions")
        if not isinstance(name, str) or self.base_dir is None:
            return None
        if name not in self._outputs:
            path = self.base_dir / "runs" / Path(name).name
            try:
                with np.load(path) as z:
                    self._outputs[name] = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                self._outputs[name] = None
        return self._outputs[name]

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
            xs = _get(run, ("train_log", key))
            if not isinstance(xs, list):
                return None
            return [_num(x) if _num(x) is not None else math.nan for x in xs]

        losses = floats("loss")
        if losses is None:
            return S.Convergence(None, None)
        return S.convergence(losses, floats("kl"))

    def unconverged(self, task: str, method: str) -> bool:
        """True when some run of ``method`` on ``task`` failed the convergence criterion."""
        return any(self.convergence(r).converged is False for r in self.runs_for(task, method))

    # structure
    def tasks(self, kind: str | None = None) -> list[str]:
        """Tasks that ran, in :data:`TASK_ORDER` then alphabetical; optionally of one kind."""
        names = {r["task"] for r in self.runs}
        ordered = [t for t in TASK_ORDER if t in names] + sorted(names - set(TASK_ORDER))
        return [t for t in ordered if kind is None or self.kind(t) == kind]

    def methods(self, task: str | None = None) -> list[str]:
        """Methods that ran (on ``task``), in :data:`METHOD_ORDER` then alphabetical."""
        names = {r["method"] for r in self.runs if task is None or r["task"] == task}
        return [m for m in METHOD_ORDER if m in names] + sorted(names - set(METHOD_ORDER))

    def runs_for(self, task: str, method: str) -> list[dict[str, Any]]:
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

    def name(self, method: str) -> str:
        """The method's name in tables: the paper's column header, else its display name."""
        if method in PAPER_COLUMNS:
            return PAPER_COLUMNS[method]
        for r in self.runs:
            if r["method"] == method and r.get("display_name"):
                return str(r["display_name"])
        return method

    @staticmethod
    def task_name(task: str) -> str:
        return TASK_NAMES.get(task, task)

    def n_classes(self, task: str) -> int | None:
        for r in self.runs:
            if r["task"] == task:
                k = _get(r, ("config", "spec", "out_dim"))
                if isinstance(k, int) and k > 1:
                    return k
                g = _get(r, ("metrics", "in_entropy_ecdf", "grid"))
                if isinstance(g, list) and g and _num(g[-1]):
                    return round(math.exp(g[-1]))
        return None

    def ood_sets(self, task: str) -> list[str]:
        names: dict[str, None] = {}
        for r in self.runs:
            if r["task"] == task:
                for name in _get(r, ("metrics", "ood")) or {}:
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
        out = [_num(_get(r.get("metrics"), path)) for r in self.runs_for(task, method)]
        return [x for x in out if x is not None]

    def scalar(self, task: str, method: str, *path: str) -> float | None:
        """Mean over seeds of ``metrics[path]``."""
        vals = self.values(task, method, *path)
        return float(np.mean(vals)) if vals else None

    def mean_std(self, task: str, method: str, *path: str) -> tuple[float, float | None, int]:
        vals = self.values(task, method, *path)
        if not vals:
            return math.nan, None, 0
        std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
        return float(np.mean(vals)), std, len(vals)

    def curve(self, task: str, method: str, *path: str) -> np.ndarray | None:
        """``metrics[path]`` as an array, averaged over the seeds whose arrays have one length."""
        arrays = []
        for r in self.runs_for(task, method):
            a = _get(r.get("metrics"), path)
            if isinstance(a, list) and a and all(_num(x) is not None for x in a):
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
            rel = _get(r.get("metrics"), ("reliability",))
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
        return bool(runs) and all(_get(r, ("data", "verified")) is True for r in runs)

    def data_label(self, tasks: Iterable[str]) -> str:
        """Caption suffix naming unverified data among ``tasks`` (empty when all verified)."""
        labels = []
        for t in tasks:
            if self.verified(t):
                continue
            if t.startswith("cifar"):
                labels.append(CIFAR_UNVERIFIED)
            else:
                labels.append(f"{self.task_name(t)} (UNVERIFIED data)")
        return (" Data: " + "; ".join(dict.fromkeys(labels)) + ".") if labels else ""

    def color(self, method: str) -> Any:
        """Fixed colour of ``method`` (Okabe-Ito palette), the same in every figure."""
        if not self._colors:
            extra = [m for m in self.methods() if m not in _METHOD_COLORS]
            for i, m in enumerate(extra):
                self._colors[m] = _SPARE_COLORS[i] if i < len(_SPARE_COLORS) else f"C{i % 10}"
            self._colors.update(_METHOD_COLORS)
        return self._colors.get(method, "black")

    def label(self, task: str, method: str) -> str:
        """Legend label: the method's name, with † when a run of it is not converged."""
        return self.name(method) + (" †" if self.unconverged(task, method) else "")


# -- a minimal document model, rendered to Markdown and HTML ----------------------------------


@dataclass
class _Doc:
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def items(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, headers: list[str], rows: list[list[str]], caption: str = "") -> None:
        self.blocks.append(("table", (headers, rows, caption)))

    def figure(self, path: Path, rel: str, caption: str) -> None:
        self.blocks.append(("fig", (path, rel, caption)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, b in self.blocks:
            if kind == "h":
                out.append("#" * b[0] + " " + b[1])
            elif kind == "p":
                out.append(b)
            elif kind == "warn":
                out.append("> **WARNING:** " + b)
            elif kind == "code":
                out.append("```\n" + b + "\n```")
            elif kind == "ul":
                out.append("\n".join("- " + i for i in b))
            elif kind == "table":
                headers, rows, caption = b
                lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |"]
                align = ["--:" if _numeric_column(rows, i) else "---" for i in range(len(headers))]
                lines.append("|" + "|".join(align) + "|")
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                if caption:
                    lines.append("\n*" + caption + "*")
                out.append("\n".join(lines))
            elif kind == "fig":
                _, rel, caption = b
                out.append(f"![{caption}]({rel})\n\n*{caption}*")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        ]
        for kind, b in self.blocks:
            if kind == "h":
                out.append(f"<h{b[0]}>{_inline(b[1])}</h{b[0]}>")
            elif kind == "p":
                out.append(f"<p>{_inline(b)}</p>")
            elif kind == "warn":
                out.append(f'<p class="warning">WARNING: {_inline(b)}</p>')
            elif kind == "code":
                out.append(f"<pre><code>{html.escape(b)}</code></pre>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b) + "</ul>")
            elif kind == "table":
                headers, rows, caption = b
                t = ["<table>"]
                if caption:
                    t.append(f"<caption>{_inline(caption)}</caption>")
                t.append("<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr>")
                left = [not _numeric_column(rows, i) for i in range(len(headers))]
                for row in rows:
                    cells = (
                        f'<td class="l">{_inline(c)}</td>' if left[i] else f"<td>{_inline(c)}</td>"
                        for i, c in enumerate(row)
                    )
                    t.append("<tr>" + "".join(cells) + "</tr>")
                t.append("</table>")
                out.append("".join(t))
            elif kind == "fig":
                path, _, caption = b
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(caption)}" '
                    f'src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(caption)}</figcaption></figure>"
                )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_NUMBER = re.compile(
    r"^(\*\*)?(—|[-+]?\d[\d.,]*( ± [\d.]+| \[[-+\d., ]+\])?( ?[a-z%]+)?)(\*\*)?( †)?$"
)


def _numeric_column(rows: list[list[str]], i: int) -> bool:
    """True when every cell of column ``i`` is a number (right-aligned)."""
    cells = [str(r[i]) for r in rows if i < len(r)]
    return bool(cells) and all(_NUMBER.match(c) for c in cells)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _inline(text: str) -> str:
    """Escape for HTML, then render **bold**, `code` and the verdict words."""
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    s = re.sub(r"\[(agrees|differs|inconclusive)\]", r'<span class="\1">\1</span>', s)
    return s.replace("[not run]", '<span class="notrun">not run</span>')


# -- formatting helpers -----------------------------------------------------------------------


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _mean_pm(view: ResultsView, task: str, method: str, *path: str, digits: int = 2) -> str:
    mean, std, n = view.mean_std(task, method, *path)
    if n == 0:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def _seconds(s: float) -> str:
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


# -- figures ------------------------------------------------------------------------------------


def _new_figure(
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


def _save(fig: Figure, path: Path, view: ResultsView | None = None, task: str = "") -> Path:
    """Write the PNG atomically; a figure of a task run on unverified data says so inside it."""
    if view is not None and task and not view.verified(task):
        label = CIFAR_UNVERIFIED if task.startswith("cifar") else "UNVERIFIED data"
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


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a full disk leaves the previous file, never half a one."""
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _ecdf_figure(view: ResultsView, task: str, ood: str, path: Path) -> Path | None:
    k = view.n_classes(task) or 10
    h_max = math.log(k)
    x_max = 2.5 if k == 10 else h_max * 2.5 / math.log(10)
    fig, (ax,) = _new_figure()
    drawn = 0
    for m in view.methods(task):
        grid = view.curve(task, m, "ood", ood, "entropy_ecdf", "grid")
        cdf = view.curve(task, m, "ood", ood, "entropy_ecdf", "cdf")
        if grid is None or cdf is None or len(grid) != len(cdf):
            continue
        xs, ys = np.append(grid, x_max), np.append(cdf, cdf[-1])
        ax.plot(xs, ys, color=view.color(m), label=view.label(task, m), lw=2)
        drawn += 1
    if not drawn:
        return None
    ax.axvline(h_max, color="0.5", ls=":", lw=1)
    ax.text(h_max, 0.02, f" ln {k}", color="0.4", fontsize=8)
    ax.set(
        xlim=(0, x_max),
        ylim=(0, 1.02),
        xlabel="predictive entropy (nats)",
        ylabel="share of examples with entropy <= x",
        title=f"Entropy ECDF on {ood} ({view.task_name(task)} models)",
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, view, task)


def _fgsm_figure(view: ResultsView, task: str, path: Path) -> Path | None:
    k = view.n_classes(task) or 10
    fig, (ax,) = _new_figure(panel=(7.6, 5.0), right_in=0.8, bottom_in=1.1)
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
    return _save(fig, path, view, task)


def _toy_figure(view: ResultsView, task: str, path: Path) -> Path | None:
    methods = [m for m in view.methods(task) if view.curve(task, m, "bands", "x") is not None]
    if not methods:
        return None
    fig, axes = _new_figure(len(methods), ncols=min(4, len(methods)), panel=(4.2, 3.6))
    for ax, m in zip(axes, methods, strict=True):
        x = view.curve(task, m, "bands", "x")
        mean = view.curve(task, m, "bands", "mean")
        std = view.curve(task, m, "bands", "std")
        xt = view.curve(task, m, "train_points", "x")
        yt = view.curve(task, m, "train_points", "y")
        if xt is not None and len(xt):
            ax.axvspan(xt.min(), xt.max(), color="0.92", zorder=0, label="training range")
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
        if xt is not None and yt is not None and len(xt) == len(yt):
            ax.scatter(xt, yt, s=12, color="black", zorder=3, label="training points")
        ax.set(
            xlim=(x.min(), x.max()),
            ylim=(-300, 300),
            xlabel="x",
            ylabel="y",
            title=view.label(task, m),
        )
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=7)
    return _save(fig, path, view, task)


def _reliability_figure(view: ResultsView, task: str, path: Path) -> Path | None:
    methods = [m for m in view.methods(task) if view.reliability(task, m) is not None]
    if not methods:
        return None
    fig, axes = _new_figure(len(methods), ncols=min(4, len(methods)), panel=(3.4, 3.4))
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
            title=f"{view.label(task, m)} (ECE {_f(ece)})",
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
    return _save(fig, path, view, task)


# -- sections -----------------------------------------------------------------------------------


def _header(doc: _Doc, view: ResultsView, results: dict[str, Any]) -> None:
    suite = results.get("suite", "?")
    doc.h(1, f"uqbench report: suite `{suite}`")
    doc.p(
        "Approximate posteriors for Bayesian neural networks compared on the experiments of "
        "Louizos & Welling (ICML 2017), *Multiplicative Normalizing Flows for Variational "
        "Bayesian Neural Networks*."
    )


def _environment(doc: _Doc, view: ResultsView, results: dict[str, Any]) -> None:
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
    train = sum(_num(r.get("train_seconds")) or 0.0 for r in view.runs)
    ev = sum(_num(r.get("eval_seconds")) or 0.0 for r in view.runs)
    line = (
        f"{len(view.runs)} runs; total wall time {_seconds(train + ev)} "
        f"(training {_seconds(train)}, evaluation {_seconds(ev)})."
    )
    if _num(results.get("wall_seconds")) is not None:
        line += f" Wall time of the whole command: {_seconds(results['wall_seconds'])}."
    doc.p(line)
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


def _summary(doc: _Doc, view: ResultsView) -> None:
    """First screen: which posterior is best for what, marked only where resolved."""
    doc.h(2, "Summary: which posterior for what")
    rows = []

    def add(what: str, task: str, stat: C.Stat, digits: int, methods: list[str]) -> None:
        top, resolved = C.best(view, task, methods, stat)
        if top is None:
            return
        iv = C.interval(view, task, top, stat)
        value = _iv_text(iv, digits) if iv is not None else "—"
        if resolved:
            verdict = f"**{view.name(top)}** (resolved against every other)"
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

    for t in view.tasks("classification"):
        ms = view.methods(t)
        add("accuracy (test error %)", t, C.STATS["error_pct"], 2, ms)
        add("calibration (ECE)", t, C.STATS["ece"], 3, ms)
        add("calibration (NLL)", t, C.STATS["nll"], 3, ms)
        o = view.ood_set(t)
        if o is not None:
            add(f"OOD detection (AUROC, {o})", t, C.ood_stat(o, "auroc"), 3, ms)
        fg = [m for m in ms if C.interval(view, t, m, C.fgsm_stat("adv_accuracy")) is not None]
        add("adversarial (FGSM accuracy, mean over eps > 0)", t, C.fgsm_stat("adv_accuracy"), 3, fg)
    for t in view.tasks("regression"):
        ms = view.methods(t)
        add(
            "regression (log density outside the data)",
            t,
            C.regression_stat("loglik_outside"),
            2,
            ms,
        )
        add(
            "regression (log density inside the data)", t, C.regression_stat("loglik_inside"), 2, ms
        )
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
        "to every other method excludes 0 (no correction for the many comparisons). "
        "† = not converged." + note + view.data_label(view.tasks()),
    )


def _settings(doc: _Doc, view: ResultsView) -> None:
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
                    str(ev.get("fgsm_samples", "—")) if _get(r, ("metrics", "fgsm")) else "—",
                    str(ev.get("fgsm_n") or "all") if _get(r, ("metrics", "fgsm")) else "—",
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


def _convergence(doc: _Doc, view: ResultsView) -> None:
    doc.h(2, "Convergence")
    w = S.CONVERGENCE_TOL
    doc.p(
        "Criterion: the mean training objective (per-epoch loss: NLL + KL / N, or the "
        "family's own objective), and the mean of its KL term where it has one, over the "
        f"last tenth of the epochs may be at most {100 * w:g}% below the mean over the "
        "tenth before (one epoch each for fewer than 20 epochs: with so few epochs the test "
        "is weak). A run that fails it is a snapshot of a training still under "
        "way: it is marked † in every table and figure, and cannot back an 'agrees'."
    )
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            for r in view.runs_for(t, m):
                c = view.convergence(r)
                n = len(_get(r, ("train_log", "loss")) or [])
                rows.append(
                    [view.name(m), view.task_name(t), str(r.get("seed", "")), str(n), c.label()]
                )
    bad = sum(1 for r in rows if r[-1].startswith("NO"))
    doc.table(
        ["method", "task", "seed", "epochs", "converged (relative fall)"],
        rows,
        f"{bad} of {len(rows)} runs are not converged by this criterion.",
    )


def _provenance(doc: _Doc, view: ResultsView) -> None:
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
    unverified = [r for r in view.runs if _get(r, ("data", "verified")) is not True]
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


def _table_methods(view: ResultsView, tasks: list[str]) -> list[str]:
    present: set[str] = set()
    for t in tasks:
        present |= set(view.methods(t))
    rest = sorted(present - set(PAPER_METHODS) - {"dropout-learned"})
    extra = (["dropout-learned"] if "dropout-learned" in present else []) + rest
    return [m for m in PAPER_METHODS if m in present or any(t in TABLE2 for t in tasks)] + extra


def _iv_text(iv: S.Interval, digits: int) -> str:
    """``mean ± half-width`` (t over seeds) or ``value [lo, hi]`` (bootstrap, one seed)."""
    v = f"{iv.value:.{digits}f}"
    if iv.lo is None or iv.hi is None:
        return v
    if iv.n >= 2:
        return f"{v} ± {(iv.hi - iv.lo) / 2:.{digits}f}"
    return f"{v} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


def _cells(
    view: ResultsView, task: str, methods: list[str], stat: C.Stat, digits: int
) -> list[str]:
    """One cell per method: mean with its 95% interval, **bold** for a resolved best,
    † for a method with an unconverged run; — where it did not run."""
    top, resolved = C.best(view, task, methods, stat)
    out = []
    for m in methods:
        iv = C.interval(view, task, m, stat)
        if iv is None:
            out.append("—")
            continue
        text = _iv_text(iv, digits)
        if resolved and m == top:
            text = f"**{text}**"
        out.append(text + (" †" if view.unconverged(task, m) else ""))
    return out


def _stats_note(view: ResultsView, tasks: list[str]) -> str:
    """Caption sentence saying how the intervals of ``tasks`` were made, and what is missing."""
    seeds = max((view.n_seeds(t) for t in tasks), default=0)
    if seeds >= 2:
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


def _table2(doc: _Doc, view: ResultsView) -> None:
    doc.h(2, "Table 2: test error (%)")
    tasks = view.tasks("classification")
    if not tasks:
        doc.p("No classification task ran.")
        return
    methods = _table_methods(view, tasks)
    rows = []
    for t in tasks:
        rows.append(
            [f"{view.task_name(t)} (ours)"] + _cells(view, t, methods, C.STATS["error_pct"], 2)
        )
        if t in TABLE2:
            rows.append(
                [f"{TABLE2_ROWS[t]} (paper)"]
                + [_f(TABLE2[t].get(m), 1) if m in TABLE2[t] else "—" for m in methods]
            )
    doc.table(
        ["task"] + [view.name(m) for m in methods],
        rows,
        "Test error (%) of the MC predictive. "
        + _stats_note(view, tasks)
        + " Paper: Louizos & Welling 2017, Table 2. — = not run."
        + view.data_label(tasks),
    )


def _calibration(doc: _Doc, view: ResultsView) -> None:
    doc.h(2, "Calibration and out-of-distribution detection")
    for t in view.tasks("classification"):
        oods = view.ood_sets(t)
        methods = view.methods(t)
        h_max = math.log(view.n_classes(t) or 10)
        columns: list[tuple[str, C.Stat, int]] = [
            ("error %", C.STATS["error_pct"], 2),
            ("NLL", C.STATS["nll"], 3),
            ("ECE", C.STATS["ece"], 3),
            ("Brier", C.STATS["brier"], 3),
            ("median H test", C.STATS["test_median_entropy"], 3),
        ]
        for o in oods:
            columns += [
                (f"AUROC {o}", C.ood_stat(o, "auroc", h_max), 3),
                (f"FPR95 {o} (in+)", C.ood_stat(o, "fpr95_in", h_max), 3),
                (f"FPR95 {o} (OOD+)", C.ood_stat(o, "fpr95", h_max), 3),
                (f"median H {o}", C.ood_stat(o, "median_entropy", h_max), 3),
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
            ("RMSE", C.Stat("rmse", C._path("rmse"), lower_better=True), 2),
            ("loglik in", C.regression_stat("loglik_inside"), 2),
            ("loglik out", C.regression_stat("loglik_outside"), 2),
            ("cover 3σ in", C.regression_stat("coverage_3std_inside"), 3),
            ("cover 3σ out", C.regression_stat("coverage_3std_outside"), 3),
        ]
        cols = [_cells(view, t, methods, stat, d) for _, stat, d in stat_cols]
        rows = []
        for i, m in enumerate(methods):
            stats = band_stats(view, t, m)
            rows.append(
                [view.name(m), str(len(view.runs_for(t, m)))]
                + [c[i] for c in cols]
                + [_f(stats[0] if stats else None, 2), _f(stats[1] if stats else None, 2)]
            )
        doc.h(3, view.task_name(t))
        doc.table(
            ["method", "seeds"] + [h for h, _, _ in stat_cols] + ["mean std in", "mean std out"],
            rows,
            f"{view.task_name(t)}: held-out points inside / outside the training range. "
            "loglik = mean Gaussian predictive log density (higher is better); cover 3σ = "
            "share within mean ± 3 std (0.997 if calibrated); mean std on the plotting "
            "grid inside / outside the training inputs' range. "
            + _stats_note(view, [t])
            + view.data_label([t]),
        )


def _figures(doc: _Doc, view: ResultsView, fig_dir: Path) -> dict[str, Path]:
    doc.h(2, "Figures")
    made: dict[str, Path] = {}

    def add(path: Path | None, key: str, caption: str) -> None:
        if path is not None:
            made[key] = path
            doc.figure(path, f"figures/{path.name}", caption)

    cls_tasks = view.tasks("classification")
    for t in cls_tasks:
        for o in view.ood_sets(t):
            key = _slug("ecdf", t, o)
            paper = _PAPER_FIGURE.get("notmnist" if "notmnist" in o.lower() else t, "")
            add(
                _ecdf_figure(view, t, o, fig_dir / f"{key}.png"),
                key,
                f"Empirical CDF of the predictive entropy on {o} for models trained on "
                f"{view.task_name(t)}"
                + (f" (paper {paper})" if paper else "")
                + "; lower curves (fewer confident predictions) are better."
                + view.data_label([t]),
            )
    for t in cls_tasks:
        key = _slug("fgsm", t)
        paper = {"mnist": " (paper Figure 4)", "cifar5": " (paper Figure 5)"}.get(t, "")
        add(
            _fgsm_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"FGSM on {view.task_name(t)}{paper}: accuracy (solid, left axis) and mean "
            "predictive entropy (dashed, right axis) against the perturbation size."
            + view.data_label([t]),
        )
    for t in view.tasks("regression"):
        key = _slug("toy-bands", t)
        add(
            _toy_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"{view.task_name(t)} (paper Figure 6): predictive mean ± 3 std (noise included) "
            "per posterior, training points, the true x³ curve (dashed) and the training "
            "range (shaded)." + view.data_label([t]),
        )
    for t in cls_tasks:
        key = _slug("reliability", t)
        add(
            _reliability_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"Reliability diagrams on the {view.task_name(t)} test set (15 equal-width "
            "confidence bins, pooled over seeds; the number above each bar is its count of "
            "test points); bars on the diagonal are calibrated. † = a run not converged."
            + view.data_label([t]),
        )
    if not made:
        doc.p("No figure: no run produced curves.")
    return made


# -- beyond the paper: OOD scores, selective prediction, dataset shift (issue 18) ---------------

#: OOD detection columns beyond the paper: (metric key, header, what the number uses).
_OOD_SCORES = (
    ("auroc", "AUROC H", "total predictive entropy"),
    ("auroc_mutual_info", "AUROC MI", "mutual information (epistemic)"),
    ("auroc_expected_entropy", "AUROC E[H]", "expected entropy (aleatoric)"),
    ("aupr_in", "AUPR-in", "total entropy, in-distribution positive"),
    ("aupr_out", "AUPR-out", "total entropy, OOD positive"),
)
#: Metrics of the shifted test sets: (key, axis label).
_SHIFT_AXES = (
    ("accuracy", "accuracy"),
    ("nll", "NLL"),
    ("ece", "ECE"),
    ("brier", "Brier"),
    ("mean_entropy", "mean entropy (nats)"),
)


def _ood_scores_table(doc: _Doc, view: ResultsView, t: str) -> None:
    """Per method, each OOD set and the mean over sets, with every OOD score."""
    oods = view.ood_sets(t)
    if not oods:
        return
    rows = []
    for m in view.methods(t):
        per_set = []
        for o in oods:
            vals = [view.scalar(t, m, "ood", o, key) for key, _, _ in _OOD_SCORES]
            per_set.append(vals)
            rows.append([view.name(m), o] + [_f(v) for v in vals])
        if len(oods) > 1:
            means = []
            for i in range(len(_OOD_SCORES)):
                col = [vals[i] for vals in per_set]
                means.append(None if any(v is None for v in col) else float(np.mean(col)))
            rows.append([view.name(m), "**mean over sets**"] + [_f(v) for v in means])
    uses = "; ".join(f"{h} uses {what}" for _, h, what in _OOD_SCORES)
    doc.table(
        ["method", "OOD set"] + [h for _, h, _ in _OOD_SCORES],
        rows,
        f"{view.task_name(t)}: OOD detection by score, means over seeds; higher is better for "
        f"all. {uses}. MI = H[E p] - E[H[p]] over posterior samples." + view.data_label([t]),
    )


def _mean_ecdf_figure(view: ResultsView, t: str, path: Path) -> Path | None:
    """Entropy ECDF averaged over the OOD sets of ``t`` (only with more than one set)."""
    oods = view.ood_sets(t)
    if len(oods) < 2:
        return None
    fig, (ax,) = _new_figure()
    drawn = 0
    for m in view.methods(t):
        grids = [view.curve(t, m, "ood", o, "entropy_ecdf", "grid") for o in oods]
        cdfs = [view.curve(t, m, "ood", o, "entropy_ecdf", "cdf") for o in oods]
        if any(c is None for c in cdfs) or len({len(c) for c in cdfs}) != 1:
            continue
        ax.plot(grids[0], np.mean(cdfs, axis=0), color=view.color(m), label=view.name(m), lw=2)
        drawn += 1
    if not drawn:
        return None
    ax.set(
        ylim=(0, 1.02),
        xlabel="predictive entropy (nats)",
        ylabel="share of examples with entropy <= x",
        title=f"Entropy ECDF, mean over {len(oods)} OOD sets ({view.task_name(t)} models)",
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, view, t)


def _risk_coverage_figure(view: ResultsView, t: str, path: Path) -> Path | None:
    fig, (ax,) = _new_figure()
    drawn = 0
    for m in view.methods(t):
        cov = view.curve(t, m, "risk_coverage", "coverage")
        risk = view.curve(t, m, "risk_coverage", "risk")
        if cov is None or risk is None or len(cov) != len(risk):
            continue
        ax.plot(cov, risk, color=view.color(m), label=view.name(m), lw=2)
        drawn += 1
    if not drawn:
        return None
    ax.set(
        xlim=(0, 1),
        xlabel="coverage (share of test points kept, most confident first)",
        ylabel="risk (error rate among kept points)",
        title=f"Risk-coverage on {view.task_name(t)}",
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path, view, t)


def _rotation_figure(view: ResultsView, t: str, path: Path) -> Path | None:
    """Each shift metric against the rotation angle, one line per method (Ovadia et al.)."""
    fig, axes = _new_figure(len(_SHIFT_AXES), ncols=3, panel=(4.6, 3.4))
    drawn = 0
    for m in view.methods(t):
        angle = view.curve(t, m, "shift_rotation", "angle")
        if angle is None:
            continue
        for ax, (key, label) in zip(axes, _SHIFT_AXES, strict=True):
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
    return _save(fig, path, view, t)


def _severity_boxes_figure(view: ResultsView, t: str, path: Path) -> Path | None:
    """Accuracy and ECE per severity: one box per method over corruptions (Ovadia et al.)."""
    methods = [m for m in view.methods(t) if view.runs_for(t, m)]
    data: dict[str, dict[str, np.ndarray]] = {}
    sevs = None
    for m in methods:
        block = {}
        for key in ("accuracy", "ece"):
            per_c = {}
            for r in view.runs_for(t, m):
                sc = _get(r.get("metrics"), ("shift_corruption",)) or {}
                sevs = sevs or sc.get("severity")
                for name, vals in (sc.get("corruptions") or {}).items():
                    per_c.setdefault(name, []).append(vals.get(key))
            if per_c:  # corruptions x severities, averaged over seeds
                block[key] = np.array([np.mean(v, axis=0) for v in per_c.values()], dtype=float)
        if block:
            data[m] = block
    if not data or not sevs:
        return None
    fig, axes = _new_figure(2, ncols=2, panel=(6.4, 4.2))
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
    return _save(fig, path, view, t)


def _beyond_paper(doc: _Doc, view: ResultsView, fig_dir: Path) -> dict[str, Path]:
    """Section on epistemic/aleatoric OOD scores, AUPR, selective prediction and shift."""
    made: dict[str, Path] = {}

    def add(path: Path | None, key: str, caption: str) -> None:
        if path is not None:
            made[key] = path
            doc.figure(path, f"figures/{path.name}", caption)

    tasks = view.tasks("classification")
    if not tasks:
        return made
    doc.h(2, "Beyond the paper: OOD scores, selective prediction, dataset shift")
    for t in tasks:
        doc.h(3, view.task_name(t))
        _ood_scores_table(doc, view, t)
        key = _slug("ecdf-mean", t)
        add(
            _mean_ecdf_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"Entropy ECDF averaged over the OOD sets of {view.task_name(t)}; lower is better.",
        )
        rows = [
            [
                view.name(m),
                _f(view.scalar(t, m, "aurc"), 4),
                _f(view.scalar(t, m, "test_mutual_info_mean"), 4),
                _f(view.scalar(t, m, "test_expected_entropy_mean"), 4),
                _f(view.scalar(t, m, "rotated_accuracy_mean")),
                _f(view.scalar(t, m, "corrupted_accuracy_mean")),
            ]
            for m in view.methods(t)
        ]
        if any(cell != "—" for row in rows for cell in row[1:]):
            doc.table(
                ["method", "AURC", "MI test", "E[H] test", "acc rotated", "acc corrupted"],
                rows,
                f"{view.task_name(t)}: AURC = area under the risk-coverage curve by the "
                "predictive's top probability (lower is better); MI / E[H] test = mean "
                "epistemic / aleatoric entropy on the test set (nats); acc rotated = mean "
                "accuracy over the rotation angles, acc corrupted = over corruptions and "
                "severities (higher is better; — = not evaluated)." + view.data_label([t]),
            )
        key = _slug("risk-coverage", t)
        add(
            _risk_coverage_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"Risk-coverage curves on {view.task_name(t)}: lower is better, chiefly at low "
            "coverage." + view.data_label([t]),
        )
        key = _slug("rotation", t)
        add(
            _rotation_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"Metrics of the predictive on the rotated {view.task_name(t)} test subset against "
            "the angle (Ovadia et al. 2019, Figure 1 style)." + view.data_label([t]),
        )
        key = _slug("corruption", t)
        add(
            _severity_boxes_figure(view, t, fig_dir / f"{key}.png"),
            key,
            f"Accuracy and ECE on the corrupted {view.task_name(t)} test subset per severity; "
            "each box spans the corruptions (CIFAR-10-C definitions)." + view.data_label([t]),
        )
    return made


def _per_run(doc: _Doc, view: ResultsView) -> None:
    doc.h(2, "Runs")
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            for r in view.runs_for(t, m):
                verified = _get(r, ("data", "verified"))
                rows.append(
                    [
                        view.name(m),
                        view.task_name(t),
                        str(r.get("seed", "")),
                        _f(_num(r.get("train_seconds")), 1),
                        _f(_num(r.get("eval_seconds")), 1),
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


def _mechanism(doc: _Doc, view: ResultsView) -> None:
    """Per-layer terms of q for the Gaussian families: does MNF's z do anything?"""
    families = ("ffg", "mnf")
    rows = []
    for t in view.tasks():
        for m in view.methods(t):
            if m not in families:
                continue
            layers: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in view.runs_for(t, m):
                for name, d in (_get(r, ("metrics", "diagnostics", "q_layers")) or {}).items():
                    for k, x in (d or {}).items():
                        if _num(x) is not None:
                            layers[name][k].append(float(x))
            for name, d in layers.items():
                mean = {k: float(np.mean(v)) for k, v in d.items()}
                rows.append(
                    [view.task_name(t), view.name(m), name]
                    + [
                        _f(mean.get(k), 3)
                        if k not in ("kl_w", "log_q", "log_r", "kl")
                        else _f(mean.get(k), 1)
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
        "layer). A spread of z near 0 means z is a fixed rescaling and MNF is FFG in effect.",
    )


def _sparsity(doc: _Doc, view: ResultsView) -> None:
    blocks = []
    for t in view.tasks():
        for m in view.methods(t):
            layers: dict[str, list[float]] = defaultdict(list)
            for r in view.runs_for(t, m):
                sp = _get(r, ("metrics", "diagnostics", "sparsity"))
                if isinstance(sp, dict):
                    for layer, x in sp.items():
                        if _num(x) is not None:
                            layers[layer].append(float(x))
            if layers:
                blocks.append((t, m, {k: float(np.mean(v)) for k, v in layers.items()}))
    if not blocks:
        return
    doc.h(2, "FFLU sparsity")
    for t, m, layers in blocks:
        names = list(layers)
        rows = [[f"{view.name(m)} (ours)"] + [_f(100 * layers[n], 1) for n in names]]
        paper = FFLU_SPARSITY_PCT.get(t)
        if m == "fflu" and paper:
            if len(paper) == len(names):
                rows.append(["paper"] + [_f(x, 1) for x in paper])
            else:
                doc.p(f"Paper ({view.task_name(t)}): " + ", ".join(f"{x:g}%" for x in paper))
        doc.table(
            ["", *names],
            rows,
            f"{view.task_name(t)}: share (%) of weights with log σ² − log μ² ≥ 5, per "
            "layer, mean over seeds." + view.data_label([t]),
        )


def _against_paper(
    doc: _Doc, view: ResultsView, figures: dict[str, Path], results: dict[str, Any]
) -> None:
    doc.h(2, "Against the paper")
    doc.p(
        "Each qualitative claim of the paper's Section 4, checked on these results (means "
        "over seeds). The thresholds that turn words into numbers are in `uqbench/paper.py`."
    )
    discussion = results.get("discussion") or {}
    counts: dict[str, int] = defaultdict(int)
    items = []
    for claim in CLAIMS:
        verdict = claim.check(view)
        counts[verdict.status] += 1
        ours = sorted(k for k in figures if k.startswith(claim.plot))
        where = claim.figure + (
            " (ours: " + ", ".join(f"figures/{figures[k].name}" for k in ours) + ")" if ours else ""
        )
        label = view.data_label([claim.task]) if claim.task in view.tasks() else ""
        text = (
            f"[{verdict.status}] `{claim.id}` (Section {claim.section}; {where}): "
            f"{claim.text} Numbers: {verdict.evidence}.{label}"
        )
        if isinstance(discussion, dict) and discussion.get(claim.id):
            text += _discussion_note(view, claim.task, verdict.status, discussion[claim.id])
        items.append(text)
    doc.p(
        f"Summary: {counts['agrees']} agree, {counts['differs']} differ, "
        f"{counts['inconclusive']} inconclusive, {counts['not run']} not run. A claim agrees "
        "or differs only when the differences it states are resolved at 95% (paired over "
        "seeds, or over test examples within one seed) and, to agree, every run it rests "
        "on converged."
    )
    doc.items(items)


#: Human-written notes per claim id beside results.json (TOML): a table per claim with
#: ``text``, the ``verdict`` it was written for and the ``numbers`` it discusses
#: (``"task/method/stat" = value``, stat as in :func:`uqbench.paper.stat_named`).
DISCUSSION_FILE = "discussion.toml"
#: A note's number still matches when within this share of it (or 0.0006 absolute).
NOTE_TOLERANCE = 0.005


def _discussion_note(view: ResultsView, task: str, status: str, entry: Any) -> str:
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
        iv = C.interval(view, t, method, stat_named(name, math.log(view.n_classes(t) or 10)))
        if iv is None:
            problems.append(f"{key} is not in these results")
        elif _num(want) is None or abs(iv.value - want) > max(NOTE_TOLERANCE * abs(want), 6e-4):
            problems.append(f"{key} was {want}, now {iv.value:.4g}")
    text = str(entry.get("text", ""))
    if problems:
        return f" Discussion **[STALE: {'; '.join(problems)}]**: {text}"
    return f" Discussion: {text}"


def _with_discussion(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """Add the notes of ``path`` (if it exists) as ``results["discussion"]``."""
    if "discussion" in results or not path.exists():
        return results
    try:
        notes = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ResultsError(f"{path}: not valid TOML: {exc}") from None
    return {**results, "discussion": notes}


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` under ``out_dir``.

    Notes in ``out_dir/discussion.toml`` (claim id -> text) go under their claims in
    "Against the paper".

    ``results`` is a merged results dict (schema ``uqbench.results/1`` or ``/2``); saved
    per-example outputs are read from ``out_dir/runs``. Returns the
    paths written. Raises :class:`ResultsError` for a dict that is not such a file.
    """
    schema = results.get("schema")
    if schema is not None and schema not in READABLE_RESULTS_SCHEMAS:
        raise ResultsError(
            f"results schema is {schema!r}, expected one of {READABLE_RESULTS_SCHEMAS}"
        )
    out_dir = Path(out_dir)
    results = _with_discussion(results, out_dir / DISCUSSION_FILE)
    view = ResultsView(results, out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    doc = _Doc()
    _header(doc, view, results)
    _summary(doc, view)
    _settings(doc, view)
    _table2(doc, view)
    _calibration(doc, view)
    figures = _figures(doc, view, fig_dir)
    figures.update(_beyond_paper(doc, view, fig_dir))
    _convergence(doc, view)
    _per_run(doc, view)
    _mechanism(doc, view)
    _sparsity(doc, view)
    _against_paper(doc, view, figures, results)
    _environment(doc, view, results)
    _provenance(doc, view)

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    _write_text(md_path, doc.markdown())
    _write_text(html_path, doc.html(f"uqbench report: {results.get('suite', '')}"))
    return [md_path, html_path, *figures.values()]
