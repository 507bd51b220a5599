"""Intervals and paired comparisons, so that the report says "better" only when it is resolved.

Two sources of noise (``/docs/statistics.md`` of the project brief):

* training noise across seeds: with ``k >= 2`` seeds a Student t-interval on the mean
  (``k - 1`` degrees of freedom) and, for a comparison, on the paired per-seed differences
  (same seed index for both methods);
* test-set noise within one trained model: with one seed, a paired bootstrap over test
  examples, from the per-example outputs a run saved beside its run file (the same
  resampled examples are applied to both models).

Both at once (:func:`t_with_test_noise`): the seeds' t-interval widened by the test-set
noise common to all seeds, from a bootstrap of the test examples they share; the report
states each claim's verdict with it too. It widens only an interval there is: a difference
equal on every seed stays without one.

A difference is *resolved* when its 95% interval excludes zero. With one seed and no saved
outputs there is no interval, and nothing is resolved; nor for a difference equal on every
seed (no spread measured). The test-set bootstrap stands in only where each method has one
seed: it leaves out training noise, so it never replaces missing seeds of a multi-seed run.

Everything here is deterministic (fixed bootstrap seed), so a report rebuilds byte-identical.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: Coverage of every interval in the report.
LEVEL = 0.95
#: Bootstrap replicates for an interval over test examples.
N_BOOT = 1000
#: Seed of the bootstrap's generator (fixed: reports rebuild identically).
BOOT_SEED = 20170101

#: Convergence: the training objective's mean (and its KL term's) over the last tenth of
#: training may be at most this much below that over the tenth before, relative to the former.
CONVERGENCE_TOL = 0.05


# -- Student t quantile (exact for integer degrees of freedom) -------------------------------


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| < t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (``p`` in (0.5, 1)) of Student's t with ``df >= 1`` degrees of freedom."""
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    mass = 2 * p - 1
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < mass:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_two_sided_mass(mid, df) < mass:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# -- intervals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval (95% unless asked otherwise; ``lo``/``hi`` None
    when there is none).

    ``how`` says where the interval comes from, for captions and verdict evidence.
    """

    value: float
    lo: float | None
    hi: float | None
    n: int
    how: str

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0, -1 below 0, 0 when it contains 0 or is missing."""
        if self.lo is None or self.hi is None:
            return 0
        return 1 if self.lo > 0 else (-1 if self.hi < 0 else 0)

    def relative_to(self, threshold: float) -> int:
        """+1 when the interval lies above ``threshold``, -1 below, 0 otherwise."""
        if self.lo is None or self.hi is None:
            return 0
        return 1 if self.lo > threshold else (-1 if self.hi < threshold else 0)


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` (one per seed) with a Student t-interval; none with one value."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, None, None, 1, "one seed: no interval")
    half = t_quantile((1 + level) / 2, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, f"t-interval over {n} seeds")


def clipped(iv: Interval, lo: float | None, hi: float | None) -> Interval:
    """``iv`` with its bounds clipped to the values the statistic can take, ``[lo, hi]``
    (None: unbounded that way). The true value lies in that range, so the clipped interval
    covers it whenever the interval did: a t-interval over three seeds of an error rate near 0
    would otherwise reach below 0."""
    a, b = iv.lo, iv.hi
    if a is None or b is None:
        return iv
    a = a if lo is None else max(a, lo)
    b = b if hi is None else min(b, hi)
    if (a, b) == (iv.lo, iv.hi):
        return iv
    return Interval(iv.value, a, b, iv.n, iv.how)


def paired_t(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of the paired differences ``a[i] - b[i]`` (same seed) with a t-interval."""
    if len(a) != len(b):
        raise ValueError("paired_t needs as many values of a as of b")
    d = np.asarray(a, float) - np.asarray(b, float)
    iv = t_interval(d, level)
    if iv.n > 1 and float(d.std(ddof=1)) <= 1e-9 * max(1.0, abs(iv.value)):
        # The same difference on every seed, up to float rounding (a quantized metric, a few
        # test points apart): a zero spread over a handful of seeds is no zero-width interval.
        how = f"difference equal on all {iv.n} seeds: no spread, no interval"
        return Interval(iv.value, None, None, iv.n, how)
    how = f"paired t over {iv.n} seeds" if iv.n > 1 else iv.how
    return Interval(iv.value, iv.lo, iv.hi, iv.n, how)


#: A statistic of one model's per-example outputs under bootstrap weights (one weight
#: vector per group of examples, e.g. "test", "ood:notmnist"); None when not computable.
WeightedStat = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray]], float | None]
#: A weighted statistic's function of the weights alone, for one run's outputs.
OfWeights = Callable[[Mapping[str, np.ndarray]], float | None]


class Prepared:
    """A :data:`WeightedStat` split in two: ``prepare(outputs)`` does the work that depends on
    the outputs alone (conversions, sorting) and returns the function of the weights.

    :func:`bootstrap_values` prepares once and calls that function for each of its
    hundreds of weightings of the same outputs; called as ``stat(outputs, w)`` it is the
    plain statistic.
    """

    def __init__(self, prepare: Callable[[Mapping[str, np.ndarray]], OfWeights]) -> None:
        self.prepare = prepare

    def __call__(
        self, outputs: Mapping[str, np.ndarray], w: Mapping[str, np.ndarray]
    ) -> float | None:
        return self.prepare(outputs)(w)


@dataclass(frozen=True)
class Pooled:
    """Which pool member each example of a run is, for :func:`bootstrap_values`.

    ``sizes``: pool name -> members (the same for every run to be paired);
    ``positions``: group -> (pool name, each example's member index in that pool).
    """

    sizes: Mapping[str, int]
    positions: Mapping[str, tuple[str, np.ndarray]]


def bootstrap_values(
    stat: WeightedStat,
    outputs: Mapping[str, np.ndarray],
    sizes: Mapping[str, int],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    pooled: Pooled | None = None,
) -> np.ndarray:
    """``stat(outputs)`` under each of ``n_boot`` bootstrap resamples (NaN where undefined).

    Each replicate resamples every group of examples (``sizes``: group -> number of
    examples) with replacement, as multinomial counts. The counts depend only on ``seed``
    and ``sizes`` (its groups in their order), so two runs' values with the same arguments
    are paired replicate by replicate: the same resampled examples for both.

    ``pooled`` pairs examples by identity instead of by position: each pool of examples
    (an upstream test split) gets one Poisson(1) count per member in each replicate (a
    Poisson bootstrap), and every example weighs its member's count (see :class:`Pooled`).
    Runs that scored different subsets of one pool then share the counts of the examples
    they have in common, given the same ``seed`` and pool sizes.
    """
    of_w = stat.prepare(outputs) if isinstance(stat, Prepared) else functools.partial(stat, outputs)
    # What is drawn: each group's examples, or each pool's members (pools in name order).
    drawn = dict(sizes) if pooled is None else {p: pooled.sizes[p] for p in sorted(pooled.sizes)}
    draws = _replicate_counts(seed, n_boot, tuple(drawn.values()), poisson=pooled is not None)
    out = np.full(n_boot, np.nan)
    for i, counts in enumerate(draws):
        of = dict(zip(drawn, counts, strict=True))
        if pooled is None:
            w = {g: c.astype(float) for g, c in of.items()}
        else:
            w = {g: of[p][pos].astype(float) for g, (p, pos) in pooled.positions.items()}
        x = of_w(w)
        if x is not None and math.isfinite(x):
            out[i] = x
    return out


#: Most counts (replicates x examples) whose draws :func:`_replicate_counts` keeps: 32 MB
#: as bytes; a set of sizes with more (a single-seed interval on a large test set) is drawn
#: anew on each call.
_KEEP_MAX = 1 << 25


def _draws(
    seed: int, n_boot: int, sizes: tuple[int, ...], poisson: bool
) -> Iterator[list[np.ndarray]]:
    """Each replicate's counts, group by group in ``sizes``' order: multinomial over each
    group's examples, or (``poisson``) Poisson(1) per member of each pool."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield [
            rng.poisson(1.0, n) if poisson else rng.multinomial(n, np.full(n, 1.0 / n))
            for n in sizes
        ]


@functools.lru_cache(maxsize=16)
def _kept_draws(
    seed: int, n_boot: int, sizes: tuple[int, ...], poisson: bool
) -> tuple[np.ndarray, ...]:
    """:func:`_draws` as one ``[n_boot, n]`` array per group, filled row by row (bytes
    unless a count exceeds 255), read-only: every caller of the cache shares them."""
    kept = [np.empty((n_boot, n), np.uint8) for n in sizes]
    for i, counts in enumerate(_draws(seed, n_boot, sizes, poisson)):
        for j, c in enumerate(counts):
            if c.size and c.max() > np.iinfo(kept[j].dtype).max:
                kept[j] = kept[j].astype(np.int64)
            kept[j][i] = c
    for a in kept:
        a.setflags(write=False)
    return tuple(kept)


def _replicate_counts(
    seed: int, n_boot: int, sizes: tuple[int, ...], poisson: bool
) -> Iterator[Sequence[np.ndarray]]:
    """:func:`_draws`, kept for reuse where they fit :data:`_KEEP_MAX`: they depend only on
    these arguments (not on the groups' names), and a report resamples runs of the same
    sizes many times (every run of a task, for every statistic)."""
    seed, sizes = int(seed), tuple(int(n) for n in sizes)
    if n_boot * sum(sizes) > _KEEP_MAX or not sizes:
        return _draws(seed, n_boot, sizes, poisson)
    kept = _kept_draws(seed, n_boot, sizes, poisson)
    return ([a[i] for a in kept] for i in range(n_boot))


def bootstrap(
    stat: WeightedStat,
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray] | None,
    sizes: Mapping[str, int],
    *,
    n_boot: int = N_BOOT,
    seed: int = BOOT_SEED,
    level: float = LEVEL,
) -> Interval | None:
    """Percentile bootstrap interval of ``stat(a)`` (``b`` None) or of ``stat(a) - stat(b)``,
    with the same resampled examples for ``a`` and ``b`` (a paired bootstrap,
    :func:`bootstrap_values`). The point value is the statistic with unit weights."""
    ones = {g: np.ones(n) for g, n in sizes.items()}
    value = stat(a, ones)
    if value is not None and b is not None:
        sb = stat(b, ones)
        value = None if sb is None else value - sb
    if value is None or any(n == 0 for n in sizes.values()):
        return None
    reps = bootstrap_values(stat, a, sizes, n_boot=n_boot, seed=seed)
    if b is not None:
        reps = reps - bootstrap_values(stat, b, sizes, n_boot=n_boot, seed=seed)
    reps = reps[np.isfinite(reps)]
    if len(reps) < n_boot // 2:
        return None
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(value), float(lo), float(hi), 1, "paired bootstrap over test examples")


#: Bootstrap replicates for the test-set variance of :func:`t_with_test_noise` (a variance,
#: not a tail quantile: its relative standard error is about sqrt(2 / 400) = 7%; the shared
#: part is a covariance between seeds, small against their variances, and is known less
#: well: about 20% relative in the committed reports' comparisons, 10% in the half-width).
#: Only statistics that are not a mean over examples use them (and a mean whose per-example
#: values are not all finite): for a mean the covariance has a closed form
#: (:func:`uqbench.compare._linear_rows`).
N_BOOT_VAR = 400


def t_with_test_noise(values: Sequence[float], test_var: float, level: float = LEVEL) -> Interval:
    """Mean of per-seed ``values`` with an interval for both sources of noise.

    The seeds' spread gives the training noise of the mean (``s^2 / k``), and with it the
    test-set noise particular to each seed; ``test_var`` is the test-set noise common to
    every seed (they are all scored on one test set), which does not shrink with ``k`` and
    which the spread cannot show (:func:`uqbench.compare._test_variance` estimates it). The
    interval is ``mean +- t(k - 1) * sqrt(s^2 / k + test_var)``: never narrower than the
    seeds' own t-interval, and erring wide (Welch-Satterthwaite degrees of freedom, more
    than ``k - 1`` when ``test_var`` is a large share, would give a narrower one).
    """
    x = np.asarray(values, float)
    k = len(x)
    if k < 2:
        raise ValueError("t_with_test_noise needs two or more seeds")
    if not math.isfinite(test_var) or test_var < 0:
        raise ValueError(f"test_var must be a finite variance, got {test_var}")
    mean = float(x.mean())
    seed_var = float(x.var(ddof=1)) / k
    total = seed_var + test_var
    if total <= 1e-18 * max(1.0, mean * mean):
        how = f"no spread over {k} seeds nor over test examples: no interval"
        return Interval(mean, None, None, k, how)
    half = t_quantile((1 + level) / 2, k - 1) * math.sqrt(total)
    share = 100 * test_var / total
    how = f"t over {k} seeds + test-set bootstrap ({share:.0f}% of the variance)"
    return Interval(mean, mean - half, mean + half, k, how)


# -- weighted versions of the metrics (weights = bootstrap counts) -----------------------------


def w_mean(x: np.ndarray, w: np.ndarray) -> float | None:
    """Weighted mean; None when all weights are zero."""
    total = w.sum()
    return float(np.dot(x, w) / total) if total > 0 else None


def w_quantile(
    x: np.ndarray, w: np.ndarray, q: float, order: np.ndarray | None = None
) -> float | None:
    """Weighted ``q`` quantile: the value at which the cumulative weight first reaches q.

    With unit weights and an odd count, ``q = 0.5`` is the ordinary median. ``order``:
    ``np.argsort(x, kind="stable")``, when computed once for many weights.
    """
    if order is None:
        order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    if cw[-1] <= 0:
        return None
    if q == 0.5 and np.allclose(w, 1.0) and len(x) % 2 == 0:
        return float(np.median(x))
    i = int(np.searchsorted(cw, q * cw[-1] - 1e-9))
    return float(x[order[min(i, len(x) - 1)]])


def auroc_ranks(s_in: np.ndarray, s_ood: np.ndarray) -> tuple[np.ndarray, int]:
    """The rank of every score among the distinct scores of both sets (in-set first), and
    how many distinct scores there are: what :func:`w_auroc` needs beyond the weights."""
    values, inverse = np.unique(np.concatenate([s_in, s_ood]), return_inverse=True)
    return inverse, len(values)


def w_auroc(
    s_in: np.ndarray,
    w_in: np.ndarray,
    s_ood: np.ndarray,
    w_ood: np.ndarray,
    ranks: tuple[np.ndarray, int] | None = None,
) -> float:
    """Weighted Mann-Whitney AUROC, OOD positive: ``P(s_ood > s_in) + P(equal) / 2``.

    ``ranks``: :func:`auroc_ranks` of the same scores, when computed once for many weights.
    """
    inverse, n_values = auroc_ranks(s_in, s_ood) if ranks is None else ranks
    n_in = len(s_in)
    win = np.bincount(inverse[:n_in], weights=w_in, minlength=n_values)
    wood = np.bincount(inverse[n_in:], weights=w_ood, minlength=n_values)
    below = np.cumsum(win) - win
    return float(np.dot(wood, below + win / 2) / (win.sum() * wood.sum()))


def w_ece(conf: np.ndarray, correct: np.ndarray, w: np.ndarray, n_bins: int = 15) -> float:
    """Weighted expected calibration error over ``n_bins`` equal-width confidence bins."""
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    n = np.bincount(idx, weights=w, minlength=n_bins)
    c = np.bincount(idx, weights=w * conf, minlength=n_bins)
    a = np.bincount(idx, weights=w * correct, minlength=n_bins)
    return float(np.abs(a - c).sum() / n.sum())


def ecdf_area(h: np.ndarray, w: np.ndarray, h_max: float) -> float | None:
    """Area under the entropy ECDF over ``[0, h_max]``: ``h_max - E[min(h, h_max)]``."""
    m = w_mean(np.clip(h, 0.0, h_max), w)
    return None if m is None else h_max - m


# -- convergence -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Convergence:
    """Relative fall of the training objective (and of its KL term) between the last two
    tenths of training; ``converged`` None when it cannot be told."""

    rel_change: float | None
    converged: bool | None
    kl_rel_change: float | None = None

    def label(self) -> str:
        if self.converged is None or self.rel_change is None:
            return "unknown"
        text = f"loss {100 * self.rel_change:+.1f}%"
        if self.kl_rel_change is not None:
            text += f", KL {100 * self.kl_rel_change:+.1f}%"
        return f"{'yes' if self.converged else 'NO'} ({text})"


def _rel_fall(values: Sequence[float]) -> float | None:
    x = [float(v) for v in values if v is not None and math.isfinite(v)]
    if len(x) < 2 or len(x) != len(values):
        return None
    w = max(1, len(x) // 10)
    last, prev = np.mean(x[-w:]), np.mean(x[-2 * w : -w])
    return None if last == 0 else float((prev - last) / abs(last))


def convergence(
    losses: Sequence[float], kls: Sequence[float] | None = None, tol: float = CONVERGENCE_TOL
) -> Convergence:
    """Convergence of a run from its per-epoch training loss (and KL term, ``train_log``).

    With ``w = max(1, n // 10)`` epochs per window, ``rel = (mean(prev w) - mean(last w)) /
    |mean(last w)|`` for the loss and, when given and not all zero, for the KL term; the run
    counts as converged when both are ``<= tol`` (a rise counts as converged: it no longer
    falls). The KL is checked on its own because for a large KL / N the loss can fall slowly
    in relative terms while the KL still falls steadily. Fewer than two epochs: unknown.
    """
    rel = _rel_fall(losses)
    if rel is None:
        return Convergence(None, None)
    kl_rel = _rel_fall(kls) if kls is not None and any(kls) else None
    ok = rel <= tol and (kl_rel is None or kl_rel <= tol)
    return Convergence(rel, ok, kl_rel)
