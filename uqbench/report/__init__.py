"""The comparison report, written from a merged ``results.json`` alone.

:func:`write_report` needs no models and no data: every table and figure comes from the
run objects of the results schema. It writes ``report.md``, a self-contained ``report.html``
(figures embedded as base64 PNG) and the PNG figures under ``figures/``. Tasks or
methods that did not run are left out (or marked "not run"), never an error.

The package's modules, each depending only on those above it:

- :mod:`~uqbench.report.view`: :class:`ResultsView`, the results grouped by task and method
  and averaged over seeds (pure data; :mod:`uqbench.compare` and :mod:`uqbench.paper` read
  results through it);
- :mod:`~uqbench.report.style`: names, order, colours, data labels and number formats
  (:class:`~uqbench.report.style.ReportView`);
- :mod:`~uqbench.report.document`: the small Markdown / HTML document model;
- :mod:`~uqbench.report.figures`: the figures;
- :mod:`~uqbench.report.sections`: the sections, in report order.

Importing this package loads the view only; matplotlib and the rest load when a report is
written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uqbench.check import validate_comparable
from uqbench.errors import ResultsError
from uqbench.report.view import ResultsView
from uqbench.results import READABLE_RESULTS_SCHEMAS

__all__ = ["ResultsView", "write_report"]


def write_report(
    results: dict[str, Any], out_dir: Path, *, test_noise: bool = False, progress: bool = False
) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` under ``out_dir``.

    ``progress``: progress bars on stderr, over the sections and over the claims' verdicts
    (the slow part of a default report; with ``test_noise``, the summary and the
    calibration tables are).

    ``test_noise``: the intervals over seeds of statistics recomputable from the runs' saved
    per-example outputs also cover the test set's noise that the seeds share
    (:func:`uqbench.stats.t_with_test_noise`); by default the tables' intervals are over
    seeds alone and only the claims' verdicts are given a second time with it.

    Notes in ``out_dir/discussion.toml`` (claim id -> text) go under their claims in
    "Against the paper".

    ``results`` is a merged results dict (any readable ``uqbench.results`` schema); saved
    per-example outputs are read from ``out_dir/runs``. Returns the
    paths written. Raises :class:`ResultsError` for a dict that is not such a file.
    """
    from tqdm.auto import tqdm

    from uqbench.report import sections
    from uqbench.report.document import Doc, write_text
    from uqbench.report.style import ReportView

    schema = results.get("schema")
    if schema is not None and schema not in READABLE_RESULTS_SCHEMAS:
        raise ResultsError(
            f"results schema is {schema!r}, expected one of {READABLE_RESULTS_SCHEMAS}"
        )
    validate_comparable(results)  # duplicates, NaN, mixed settings: refused, not averaged
    out_dir = Path(out_dir)
    results = sections.with_discussion(results, out_dir / sections.DISCUSSION_FILE)
    view = ReportView(results, out_dir, test_noise=test_noise)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    doc = Doc()
    figures: dict[str, Path] = {}
    steps: list[tuple[str, Callable[[], object]]] = [
        ("header", lambda: sections.header(doc, view, results)),
        ("summary", lambda: sections.summary(doc, view)),
        ("settings", lambda: sections.settings(doc, view)),
        ("table 2", lambda: sections.table2(doc, view)),
        ("calibration", lambda: sections.calibration(doc, view)),
        ("figures", lambda: figures.update(sections.figures(doc, view, fig_dir))),
        ("beyond the paper", lambda: figures.update(sections.beyond_paper(doc, view, fig_dir))),
        ("convergence", lambda: sections.convergence(doc, view)),
        ("per run", lambda: sections.per_run(doc, view)),
        ("mechanism", lambda: sections.mechanism(doc, view)),
        ("sparsity", lambda: sections.sparsity(doc, view)),
        (
            "against the paper",
            lambda: sections.against_paper(doc, view, figures, results, progress=progress),
        ),
        ("environment", lambda: sections.environment(doc, view, results)),
        ("provenance", lambda: sections.provenance(doc, view)),
    ]
    bar = tqdm(steps, desc="report", unit="section", leave=False, disable=not progress)
    for name, write in bar:
        bar.set_postfix_str(name, refresh=True)
        write()

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    earlier = _figures_used(md_path)
    write_text(md_path, doc.markdown())
    write_text(html_path, doc.html(f"uqbench report: {results.get('suite', '')}"))
    kept = {p.name for p in figures.values()}
    for name in earlier - kept:  # an earlier report's figure that this one has not
        (fig_dir / name).unlink(missing_ok=True)
    return [md_path, html_path, *figures.values()]


def _figures_used(md_path: Path) -> set[str]:
    """The names of the figures (``figures/NAME.png``) an earlier report.md shows: those a
    new report may remove; nothing else in ``figures/`` is the report's to delete."""
    try:
        text = md_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return set(re.findall(r"\(figures/([^()/\s]+\.png)\)", text))
