"""One declaration per reported metric: where it sits in the results, which way is better, how
the report shows it and how much the regression check lets it move.

:mod:`uqbench.check` (which metrics it compares, in which direction), :mod:`uqbench.tolerances`
(the floor of each tolerance), :mod:`uqbench.compare` (which way a best method lies) and the
report (column headers, decimals, which tables show the metric) all read :data:`METRICS`.
Adding a metric means computing it (:mod:`uqbench.metrics`), storing it in a run's metrics
(:mod:`uqbench.evaluate`) and declaring it here; to show it in a report table, add its name to
that table in :data:`REPORT_TABLES`.

Changing a ``floor`` changes only newly derived tolerance files; a metric with a floor is
compared by ``uqbench check``, so its reference must hold it (or hold it as null).
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("run", "ood", "fgsm", "q_layers")
BETTER = ("higher", "lower", None)


@dataclass(frozen=True)
class MetricDef:
    """The declaration of one metric.

    ``name`` is the metric's key in tolerance files and check rows: a run metric's own key, the
    key of a per-OOD-set metric inside ``metrics.ood.<set>`` (its check path is
    ``ood.<set>.<name>``), or ``fgsm.accuracy_mean``. ``path`` leads to the value inside a
    run's ``metrics`` (inside ``metrics.ood.<set>`` for ``scope == "ood"``; for ``"fgsm"``, to
    the accuracy curve whose mean over the eps grid is the value).
    """

    name: str
    path: tuple[str, ...]
    #: "higher" or "lower" is better; None: neither (an entropy on the test set).
    better: str | None
    #: Column header in report tables; ``{set}`` stands for the OOD set's name.
    label: str
    #: Decimals shown in the report.
    digits: int = 3
    #: Smallest tolerance of the regression check, in the metric's units; None: not checked.
    floor: float | None = None
    #: "run" (one value per run), "ood" (one per OOD set), "fgsm" (a mean over the eps grid) or
    #: "q_layers" (the mean over layers of a per-layer q diagnostic, ``diagnostics.q_layers``).
    scope: str = "run"
    #: Per-OOD-set metrics only: checked on every set, "missing" where a set lacks it. Others
    #: are checked only where the reference run holds them (metrics added after a reference).
    required: bool = False
    #: Whether a table may mark a best method. False where the ideal value is not an end of
    #: the scale: a 3-std coverage should be 0.997, so "higher" there only guards the check
    #: against a collapsed predictive variance.
    ranked: bool = True
    #: What the number uses, where a caption says so (the score of an OOD metric).
    note: str = ""
    #: Widest tolerance still worth checking (issue 16): a metric whose seed spread needs a
    #: wider one is listed as unchecked instead (uqbench.tolerances). None: no bound.
    useful_max: float | None = None
    #: Whether its seed spread scales with its level, so that spreads are pooled across
    #: methods relative to the level (uqbench.tolerances --pool).
    relative_spread: bool = False
    #: The values it can take (None: unbounded that way); a method's interval is clipped to
    #: them (a t-interval over 3 seeds of an error near 0 would otherwise reach below 0).
    bounds: tuple[float | None, float | None] = (None, None)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"metric {self.name}: scope {self.scope!r} not in {SCOPES}")
        if self.better not in BETTER:
            raise ValueError(f"metric {self.name}: better {self.better!r} not in {BETTER}")

    @property
    def checked(self) -> bool:
        """Whether ``uqbench check`` compares it (it has a tolerance floor)."""
        return self.floor is not None

    @property
    def higher_better(self) -> bool:
        """True when higher is better."""
        return self.better == "higher"

    @property
    def direction(self) -> str:
        """Which way the check counts as worse: "higher" or "lower" is better, or "either"
        (no better value: a move beyond the tolerance either way is a regression)."""
        return self.better or "either"

    @property
    def lower_better(self) -> bool | None:
        """For marking a best method: True / False, or None when no value is best."""
        return None if self.better is None or not self.ranked else self.better == "lower"


#: Every declared metric. Within a scope, the check compares the checked ones in this order.
METRICS: tuple[MetricDef, ...] = (
    # -- classification: accuracy, proper scores, calibration (the paper's Table 2 and more)
    MetricDef(
        "error_pct",
        ("error_pct",),
        "lower",
        "error %",
        2,
        floor=0.5,
        useful_max=3.0,
        relative_spread=True,
        bounds=(0.0, 100.0),
    ),
    MetricDef(
        "nll",
        ("nll",),
        "lower",
        "NLL",
        3,
        floor=0.02,
        useful_max=0.2,
        relative_spread=True,
        bounds=(0.0, None),
    ),
    MetricDef(
        "brier",
        ("brier",),
        "lower",
        "Brier",
        3,
        floor=0.01,
        useful_max=0.05,
        relative_spread=True,
        bounds=(0.0, 2.0),
    ),
    MetricDef(
        "ece",
        ("ece",),
        "lower",
        "ECE",
        3,
        floor=0.01,
        useful_max=0.05,
        relative_spread=True,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "test_median_entropy",
        ("test_entropy", "median"),
        None,
        "median H test",
        3,
        bounds=(0.0, None),
    ),
    # -- regression (toy task)
    MetricDef(
        "rmse",
        ("rmse",),
        "lower",
        "RMSE",
        2,
        floor=0.05,
        useful_max=10.0,
        bounds=(0.0, None),
    ),
    MetricDef(
        "loglik_inside", ("loglik_inside",), "higher", "loglik in", 2, floor=0.05, useful_max=3.0
    ),
    MetricDef(
        "loglik_outside", ("loglik_outside",), "higher", "loglik out", 2, floor=0.1, useful_max=10.0
    ),
    # share of held-out targets within mean +- 3 std (nominal 0.997): sees a predictive
    # variance that changed while the log-likelihood, dominated by the mean, did not
    MetricDef(
        "coverage_3std_inside",
        ("coverage_3std_inside",),
        "higher",
        "cover 3σ in",
        3,
        floor=0.02,
        ranked=False,
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "coverage_3std_outside",
        ("coverage_3std_outside",),
        "higher",
        "cover 3σ out",
        3,
        floor=0.02,
        ranked=False,
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    # -- beyond the paper (issue 18): selective prediction, entropy split, dataset shift
    MetricDef(
        "aurc",
        ("aurc",),
        "lower",
        "AURC",
        4,
        floor=0.005,
        useful_max=0.05,
        relative_spread=True,
        bounds=(0.0, 1.0),
    ),
    # the epistemic part of the test predictive (issue 16): a posterior whose samples stop
    # disagreeing (members sharing weights, entropy taken per sample) drops it to 0 while error
    # and NLL barely move, so a fall is the regression; no table ranks it
    MetricDef(
        "test_mutual_info_mean",
        ("test_mutual_info_mean",),
        "higher",
        "MI test",
        4,
        floor=0.002,
        ranked=False,
        useful_max=0.05,
        relative_spread=True,
        bounds=(0.0, None),
    ),
    MetricDef(
        "test_expected_entropy_mean",
        ("test_expected_entropy_mean",),
        None,
        "E[H] test",
        4,
        bounds=(0.0, None),
    ),
    MetricDef(
        "rotated_accuracy_mean",
        ("rotated_accuracy_mean",),
        "higher",
        "acc rotated",
        floor=0.01,
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "corrupted_accuracy_mean",
        ("corrupted_accuracy_mean",),
        "higher",
        "acc corrupted",
        floor=0.01,
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    # -- per OOD set: detection with the predictive entropy as score (OOD positive)
    MetricDef(
        "auroc",
        ("auroc",),
        "higher",
        "AUROC {set}",
        floor=0.01,
        scope="ood",
        required=True,
        note="total predictive entropy",
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "fpr95_in",
        ("fpr95_in",),
        "lower",
        "FPR95 {set} (in+)",
        scope="ood",
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "fpr95",
        ("fpr95",),
        "lower",
        "FPR95 {set} (OOD+)",
        floor=0.03,
        scope="ood",
        required=True,
        useful_max=0.25,
        relative_spread=True,
        bounds=(0.0, 1.0),
    ),
    # Higher is the paper's "more honest" on OOD data, but AUROC is the ranking score: the
    # tables show it unmarked (``ranked=False``); the claims compare it in both directions.
    MetricDef(
        "median_entropy",
        ("median_entropy",),
        "higher",
        "median H {set}",
        scope="ood",
        ranked=False,
        bounds=(0.0, None),
    ),
    MetricDef(
        "mean_entropy",
        ("mean_entropy",),
        "higher",
        "mean H {set}",
        scope="ood",
        bounds=(0.0, None),
    ),
    MetricDef(
        "auroc_mutual_info",
        ("auroc_mutual_info",),
        "higher",
        "AUROC MI",
        floor=0.01,
        scope="ood",
        note="mutual information (epistemic)",
        useful_max=0.15,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "auroc_expected_entropy",
        ("auroc_expected_entropy",),
        "higher",
        "AUROC E[H]",
        floor=0.01,
        scope="ood",
        note="expected entropy (aleatoric)",
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "aupr_in",
        ("aupr_in",),
        "higher",
        "AUPR-in",
        floor=0.01,
        scope="ood",
        note="total entropy, in-distribution positive",
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    MetricDef(
        "aupr_out",
        ("aupr_out",),
        "higher",
        "AUPR-out",
        floor=0.01,
        scope="ood",
        note="total entropy, OOD positive",
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    # -- FGSM: accuracy averaged over the eps grid (an area under the accuracy-vs-eps curve)
    MetricDef(
        "fgsm.accuracy_mean",
        ("fgsm", "accuracy"),
        "higher",
        "FGSM accuracy (mean over eps)",
        floor=0.02,
        scope="fgsm",
        useful_max=0.15,
        bounds=(0.0, 1.0),
    ),
    # -- FGSM: the share of the eps budget the attack spent (issue 16): below 1 because the
    # step is clipped to the input range, 1 without the clipping (where no gradient is 0).
    # Neither direction is better, so the check compares it both ways.
    MetricDef(
        "fgsm.budget_share",
        ("fgsm", "budget_share"),
        None,
        "FGSM budget used",
        3,
        floor=0.01,
        ranked=False,
        useful_max=0.1,
        bounds=(0.0, 1.0),
    ),
    # -- MNF's q(z) (issue 16): the share by which z rescales a weight, mean over layers; 0
    # when q(z) has no variance left, lower when the flows are off
    MetricDef(
        "q_layers.z_spread_rel",
        ("z_spread_rel",),
        "higher",
        "z spread (rel.)",
        3,
        floor=0.02,
        scope="q_layers",
        ranked=False,
        useful_max=0.2,
        relative_spread=True,
        bounds=(0.0, None),
    ),
)

#: The report's tables of metrics: their columns in order, as declared names, or as
#: (name, header) where a table heads a column otherwise than the metric's ``label``.
REPORT_TABLES: dict[str, tuple[str | tuple[str, str], ...]] = {
    # "Calibration and OOD detection", per classification task; then per OOD set
    "calibration": ("error_pct", "nll", "ece", "brier", "test_median_entropy"),
    "calibration_ood": ("auroc", "fpr95_in", "fpr95", "median_entropy"),
    # the same section's table per regression task
    "regression": (
        "rmse",
        "loglik_inside",
        "loglik_outside",
        "coverage_3std_inside",
        "coverage_3std_outside",
    ),
    # "Beyond the paper": OOD detection by score, one row per OOD set
    "ood_scores": (
        ("auroc", "AUROC H"),
        "auroc_mutual_info",
        "auroc_expected_entropy",
        "aupr_in",
        "aupr_out",
    ),
    # "Beyond the paper": selective prediction, entropy split, shift (means over seeds)
    "beyond": (
        "aurc",
        "test_mutual_info_mean",
        "test_expected_entropy_mean",
        "rotated_accuracy_mean",
        "corrupted_accuracy_mean",
    ),
}


def metric(name: str) -> MetricDef:
    """The declaration of ``name``; KeyError naming the declared metrics when there is none."""
    for m in METRICS:
        if m.name == name:
            return m
    raise KeyError(
        f"no metric {name!r} is declared; declared: {', '.join(m.name for m in METRICS)}"
    )


def metrics(scope: str | None = None, *, checked: bool | None = None) -> list[MetricDef]:
    """Declared metrics in declaration order, optionally of one scope and (un)checked only."""
    return [
        m
        for m in METRICS
        if (scope is None or m.scope == scope) and (checked is None or m.checked == checked)
    ]


def table_columns(table: str) -> list[tuple[MetricDef, str]]:
    """The columns of report table ``table``: each metric's declaration and its header."""
    out = []
    for col in REPORT_TABLES[table]:
        name, header = (col, None) if isinstance(col, str) else col
        m = metric(name)
        out.append((m, header or m.label))
    return out


def useful_maxes() -> dict[str, float]:
    """The widest useful tolerance of each checked metric that declares one, by name."""
    return {m.name: m.useful_max for m in METRICS if m.floor is not None and m.useful_max}


def floors() -> dict[str, float]:
    """The tolerance floor of each checked metric, by name (the check's metric kind)."""
    return {m.name: m.floor for m in METRICS if m.floor is not None}
