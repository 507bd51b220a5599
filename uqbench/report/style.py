"""How the report presents results: names, order, colours, data labels and number formats.

:class:`ReportView` is the results view (:mod:`uqbench.report.view`) as the report shows it;
the view itself stays free of presentation so that :mod:`uqbench.paper` and
:mod:`uqbench.compare` depend on the data alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from uqbench import stats as S
from uqbench.paper import METHOD_ORDER, method_name
from uqbench.report.view import ResultsView

#: Caption label of every CIFAR table and figure made from the unverified stand-in.
CIFAR_UNVERIFIED = "CIFAR-10 (UNVERIFIED copy: JPEG-q75 stand-in)"
#: Order of tasks in tables; other tasks follow alphabetically.
TASK_ORDER = ("mnist", "cifar5", "toy-cubic")
TASK_NAMES = {"mnist": "MNIST", "cifar5": "CIFAR 5", "toy-cubic": "Toy cubic"}
#: Colour per method, the same in every figure: the Okabe-Ito palette (Okabe & Ito 2008),
#: designed to stay distinguishable under the common colour-vision deficiencies.
METHOD_COLORS = {
    "mnf": "#0072B2",  # blue
    "dropout": "#E69F00",  # orange
    "ensemble": "#009E73",  # bluish green
    "ffg": "#CC79A7",  # reddish purple
    "fflu": "#D55E00",  # vermillion
    "dropout-learned": "#56B4E9",  # sky blue
    "l2": "#000000",  # black
}
SPARE_COLORS = ("#F0E442", "#999999", "#8C510A")  # yellow, grey, brown for plug-ins


class ReportView(ResultsView):
    """The results view with the report's presentation: task and method order (the paper's
    columns first), names, fixed colours and the labels of unverified data."""

    def __init__(
        self, results: dict[str, Any], base_dir: Path | None = None, *, test_noise: bool = False
    ) -> None:
        super().__init__(results, base_dir, test_noise=test_noise)
        self._colors: dict[str, Any] = {}

    def task_order(self) -> tuple[str, ...]:
        """:data:`TASK_ORDER`: the paper's tasks first."""
        return TASK_ORDER

    def method_order(self) -> tuple[str, ...]:
        """:data:`uqbench.paper.METHOD_ORDER`: the paper's columns first."""
        return METHOD_ORDER

    def name(self, method: str) -> str:
        """The method's name in tables: the paper's column header, else its display name."""
        return method_name(self, method)

    def task_name(self, task: str) -> str:
        """The task's name in tables and titles: the paper's, else the display name its runs
        recorded (a plug-in's), else its registered name."""
        if task in TASK_NAMES:
            return TASK_NAMES[task]
        shown = {r.get("task_display_name") for r in self.runs if r.get("task") == task}
        shown.discard(None)
        return shown.pop() if len(shown) == 1 else task

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

    def figure_label(self, task: str) -> str | None:
        """The mark a figure of ``task`` carries inside it when its data did not verify."""
        if self.verified(task):
            return None
        return CIFAR_UNVERIFIED if task.startswith("cifar") else "UNVERIFIED data"

    def color(self, method: str) -> Any:
        """Fixed colour of ``method`` (Okabe-Ito palette), the same in every figure."""
        if not self._colors:
            extra = [m for m in self.methods() if m not in METHOD_COLORS]
            for i, m in enumerate(extra):
                self._colors[m] = SPARE_COLORS[i] if i < len(SPARE_COLORS) else f"C{i % 10}"
            self._colors.update(METHOD_COLORS)
        return self._colors.get(method, "black")

    def label(self, task: str, method: str) -> str:
        """Legend label: the method's name, with † when a run of it is not converged."""
        return self.name(method) + (" †" if self.unconverged(task, method) else "")


# -- number formats ---------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; — for a missing or non-finite value."""
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def interval_text(iv: S.Interval, digits: int) -> str:
    """``mean ± half-width`` (t over seeds) or ``value [lo, hi]`` (bootstrap, one seed, or a
    t-interval clipped to the metric's range, no longer symmetric)."""
    v = f"{iv.value:.{digits}f}"
    if iv.lo is None or iv.hi is None:
        return v
    half = (iv.hi - iv.lo) / 2
    if iv.n >= 2 and math.isclose(iv.value - iv.lo, half, rel_tol=1e-9, abs_tol=1e-12):
        return f"{v} ± {half:.{digits}f}"
    return f"{v} [{iv.lo:.{digits}f}, {iv.hi:.{digits}f}]"


def slug(*parts: str) -> str:
    """A file-name-safe key from ``parts`` (figure names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def seconds(s: float) -> str:
    """A duration in s, min or h, whichever reads best."""
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"
