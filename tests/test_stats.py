"""Intervals, paired comparisons and bootstraps against independent computations.

References: scipy's Student t, a paired case worked by hand, bootstraps whose answer is
known in closed form (the normal interval of a mean), and the metrics of uqbench.metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from uqbench import compare as C
from uqbench import metrics as M
from uqbench import stats as S
from uqbench.report import ResultsView

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 9, 10, 29, 60])
@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_matches_scipy(df: int, p: float) -> None:
    assert S.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)


def test_t_interval_matches_scipy() -> None:
    x = [0.86, 0.91, 0.79, 0.88]
    iv = S.t_interval(x)
    lo, hi = scipy_stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=scipy_stats.sem(x))
    assert (iv.value, iv.lo, iv.hi, iv.n) == (
        pytest.approx(np.mean(x)),
        pytest.approx(lo),
        pytest.approx(hi),
        4,
    )
    one = S.t_interval([0.86])
    assert one.lo is None and one.hi is None and one.sign == 0 and "one seed" in one.how


def test_paired_case_by_hand() -> None:
    # d = a - b = (0.5, 1.0, 0.5): mean 2/3, sd sqrt(1/12), se 1/6, t(.975, 2) = 4.302653
    iv = S.paired_t([1.0, 2.0, 3.0], [0.5, 1.0, 2.5])
    assert iv.value == pytest.approx(2 / 3)
    assert iv.hi - iv.value == pytest.approx(4.302653 / 6, rel=1e-6)
    assert iv.sign == 0  # [-0.050, 1.384] contains 0: not resolved
    # d = (1.0, 1.1, 0.9): mean 1, se 0.1 / sqrt(3): [0.7516, 1.2484], resolved > 0
    iv = S.paired_t([2.0, 2.1, 1.9], [1.0, 1.0, 1.0])
    assert (iv.lo, iv.hi) == (pytest.approx(0.751586, abs=1e-6), pytest.approx(1.248414, abs=1e-6))
    assert iv.sign == 1 and iv.relative_to(0.7) == 1 and iv.relative_to(1.0) == 0


def test_paired_bootstrap_of_a_mean_difference_matches_the_normal_interval() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    x = rng.normal(0, 1, n)
    a, b = {"v": x + 0.05 + rng.normal(0, 0.2, n)}, {"v": x}
    stat = lambda o, w: S.w_mean(o["v"], w["test"])  # noqa: E731
    iv = S.bootstrap(stat, a, b, {"test": n}, n_boot=2000)
    d = a["v"] - b["v"]
    half = 1.959964 * d.std(ddof=1) / math.sqrt(n)
    assert iv.value == pytest.approx(d.mean())
    assert iv.lo == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert iv.hi == pytest.approx(d.mean() + half, abs=0.1 * half)
    assert iv.sign == 1  # 0.05 with se 0.0032: resolved
    # Unpaired would be ~5x wider: the pairing is what resolves it.
    assert iv.hi - iv.lo < 0.3 * 2 * 1.96 * math.sqrt(2 / n)


def test_bootstrap_of_an_error_rate_matches_the_binomial_interval() -> None:
    n, p = 2000, 0.1
    wrong = np.zeros(n)
    wrong[: int(n * p)] = 1
    iv = S.bootstrap(lambda o, w: S.w_mean(o["e"], w["test"]), {"e": wrong}, None, {"test": n})
    half = 1.959964 * math.sqrt(p * (1 - p) / n)
    assert iv.lo == pytest.approx(p - half, abs=0.12 * half)
    assert iv.hi == pytest.approx(p + half, abs=0.12 * half)


@pytest.mark.parametrize("keep_max", [S._KEEP_MAX, 0])
def test_bootstrap_weights_are_one_generators_draws_replicate_by_replicate(
    keep_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each replicate weighs its examples by, against the generator drawn here: the
    same counts on every call, whether the draws are kept for reuse or (too many to keep)
    drawn anew; multinomial group by group, or Poisson(1) pool by pool with each example
    weighing its member's count."""
    monkeypatch.setattr(S, "_KEEP_MAX", keep_max)
    sizes = {"test": 7, "ood:x": 5}
    # Pools of the groups' sizes: the multinomial and Poisson draws must not be mistaken
    # for each other.
    pooled = S.Pooled(
        {"b": 5, "a": 7}, {"test": ("a", np.array([6, 0, 0])), "ood:x": ("b", np.arange(5))}
    )
    for how in ("multinomial", "pooled"):
        for _ in range(2):
            seen: list[dict[str, np.ndarray]] = []

            def record(
                o: dict[str, np.ndarray],
                w: dict[str, np.ndarray],
                seen: list[dict[str, np.ndarray]] = seen,
            ) -> float:
                seen.append({g: v.copy() for g, v in w.items()})
                return 0.0

            S.bootstrap_values(
                record, {}, sizes, n_boot=6, seed=3, pooled=pooled if how == "pooled" else None
            )
            rng = np.random.default_rng(3)
            assert len(seen) == 6
            for w in seen:
                if how == "multinomial":
                    want = {g: rng.multinomial(n, np.full(n, 1 / n)) for g, n in sizes.items()}
                else:
                    a, b = rng.poisson(1.0, 7), rng.poisson(1.0, 5)  # pools in name order
                    want = {"test": a[[6, 0, 0]], "ood:x": b}
                for g in want:
                    assert w[g].dtype == np.float64
                    np.testing.assert_array_equal(w[g], want[g])


def test_a_prepared_statistic_is_prepared_once_per_outputs_and_equals_the_plain_one() -> None:
    rng = np.random.default_rng(4)
    prepared_for: list[dict[str, np.ndarray]] = []

    def prepare(o: dict[str, np.ndarray]) -> S.OfWeights:
        prepared_for.append(o)
        order = np.argsort(o["h"], kind="stable")
        return lambda w: S.w_quantile(o["h"], w["test"], 0.3, order)

    def plain(o: dict[str, np.ndarray], w: dict[str, np.ndarray]) -> float | None:
        return S.w_quantile(o["h"], w["test"], 0.3)

    stat = S.Prepared(prepare)
    for scale in (1.0, 5.0):  # two runs' outputs, one after the other
        out = {"h": rng.gamma(2.0, scale, 50)}
        reps = S.bootstrap_values(stat, out, {"test": 50}, n_boot=40)
        assert prepared_for[-1] is out
        plain_reps = S.bootstrap_values(plain, out, {"test": 50}, n_boot=40)
        np.testing.assert_array_equal(reps, plain_reps)
        w = {"test": rng.poisson(1.0, 50).astype(float)}
        assert stat(out, w) == plain(out, w)
    assert len(prepared_for) == 4  # once per bootstrap_values call, once per plain call


def test_weighted_metrics_equal_the_plain_ones_and_weights_act_as_copies() -> None:
    rng = np.random.default_rng(0)
    h_in, h_ood = rng.gamma(1, 0.3, 300), rng.gamma(3, 0.4, 200)
    h_in[:20] = 0.0  # ties, as saturated networks give
    h_ood[:5] = 0.0
    ones_in, ones_ood = np.ones(300), np.ones(200)
    assert S.w_auroc(h_in, ones_in, h_ood, ones_ood) == pytest.approx(M.auroc(h_in, h_ood))
    conf = rng.uniform(0.51, 1, 300)  # top probability of two classes
    correct = (rng.uniform(size=300) < conf).astype(float)
    probs = np.stack([conf, 1 - conf], 1)
    y = np.where(correct == 1, 0, 1)
    assert S.w_ece(conf, correct, ones_in) == pytest.approx(M.ece(probs, y))
    assert S.w_quantile(h_ood[:199], np.ones(199), 0.5) == pytest.approx(np.median(h_ood[:199]))
    # weight 2 on one point == that point twice
    w = ones_in.copy()
    w[7] = 2
    dup = np.append(h_in, h_in[7])
    assert S.w_auroc(h_in, w, h_ood, ones_ood) == pytest.approx(M.auroc(dup, h_ood))
    area = S.ecdf_area(h_ood, ones_ood, math.log(10))
    grid = np.linspace(0, math.log(10), 20001)
    cdf = np.searchsorted(np.sort(np.clip(h_ood, 0, math.log(10))), grid, side="right") / 200
    assert area == pytest.approx(np.trapezoid(cdf, grid), abs=1e-3)


def test_fpr95_in_distribution_positive_by_hand() -> None:
    h_in = np.arange(100) / 100  # 95% of them are <= 0.94
    h_ood = np.array([0.5, 0.95, 2.0, 0.2])  # 0.5 and 0.2 pass as in-distribution
    assert M.fpr95_in(h_in, h_ood) == pytest.approx(0.5)


def test_convergence_criterion_by_hand() -> None:
    falling = [20.0 - i for i in range(10)]  # last epoch 11 after 12: falls 1/11 = 9.1%
    c = S.convergence(falling)
    assert c.rel_change == pytest.approx(1 / 11) and c.converged is False
    flat = [1.0] * 50 + [0.5] * 40 + [0.499] * 5 + [0.498] * 5  # windows of 10 epochs
    c = S.convergence(flat)
    assert c.rel_change == pytest.approx((0.5 - 0.4985) / 0.4985) and c.converged is True
    assert S.convergence([1.0]).converged is None
    # The loss has settled but its KL term still falls 10% per tenth: not converged.
    c = S.convergence([1.0] * 20, kls=[2.0] * 16 + [1.1, 1.1, 1.0, 1.0])  # windows of 2
    assert c.rel_change == 0 and c.kl_rel_change == pytest.approx(0.1) and c.converged is False


# -- comparisons on a results view ----------------------------------------------------------


def _run(method: str, seed: int, error: float, outputs: str | None = None) -> dict[str, Any]:
    r = {
        "method": method,
        "task": "mnist",
        "seed": seed,
        "metrics": {"error_pct": error},
        "train_log": {"loss": [1.0, 0.99]},
    }
    if outputs:
        r["predictions"] = outputs
    return r


def test_compare_uses_paired_seeds_then_bootstrap_then_nothing(tmp_path) -> None:
    # Three seeds: paired t on the per-seed differences (the hand-checked case above).
    runs = [_run("a", s, e) for s, e in enumerate([1.0, 2.0, 3.0])]
    runs += [_run("b", s, e) for s, e in enumerate([0.5, 1.0, 2.5])]
    view = ResultsView({"runs": runs})
    c = C.compare(view, "mnist", "a", "b", C.STATS["error_pct"])
    assert c.value == pytest.approx(2 / 3) and c.sign == 0 and "paired t over 3" in c.how
    assert C.best(view, "mnist", ["a", "b"], C.STATS["error_pct"]) == ("b", False)

    # One seed, no outputs: a difference but no interval.
    view = ResultsView({"runs": [_run("a", 0, 1.0), _run("b", 0, 2.0)]})
    c = C.compare(view, "mnist", "a", "b", C.STATS["error_pct"])
    assert c.value == -1.0 and c.lo is None and c.sign == 0

    # One seed with saved outputs: paired bootstrap over the same test examples.
    n = 2000
    y = np.zeros(n, dtype=np.int64)
    pred_a = y.copy()
    pred_a[:20] = 1  # 1% wrong
    pred_b = y.copy()
    pred_b[:100] = 1  # 5% wrong, a superset of a's mistakes
    (tmp_path / "runs").mkdir()
    for name, pred in (("a", pred_a), ("b", pred_b)):
        np.savez_compressed(tmp_path / "runs" / f"{name}.npz", **{"test.y": y, "test.pred": pred})
    runs = [_run("a", 0, 1.0, "a.npz"), _run("b", 0, 5.0, "b.npz")]
    view = ResultsView({"runs": runs}, tmp_path)
    c = C.compare(view, "mnist", "a", "b", C.STATS["error_pct"])
    # 80 discordant examples out of 2000: d = -4 points, se = sqrt(80)/2000*100 = 0.447
    assert c.value == pytest.approx(-4.0) and c.sign == -1
    assert c.lo == pytest.approx(-4 - 1.96 * 0.447, abs=0.15)
    assert C.best(view, "mnist", ["a", "b"], C.STATS["error_pct"]) == ("a", True)
    iv = C.interval(view, "mnist", "a", C.STATS["error_pct"])
    assert iv.lo < 1.0 < iv.hi and "bootstrap" in iv.how
    # At a higher level the same replicates give a wider percentile interval, z-scaled.
    with view.at_level(0.99):
        c99 = C.compare(view, "mnist", "a", "b", C.STATS["error_pct"])
    assert c99.lo < c.lo and c99.hi > c.hi
    assert c99.lo == pytest.approx(-4 - 2.576 * 0.447, abs=0.2)


def test_a_difference_equal_on_every_seed_gives_no_interval() -> None:
    # The same gap on all 3 seeds (one test example apart on each) is no evidence of a
    # zero-width interval: nothing resolved.
    d = S.paired_t([1.01, 2.01, 3.01], [1.0, 2.0, 3.0])
    assert d.value == pytest.approx(0.01) and d.sign == 0 and "equal on all 3" in d.how
    # One method's value at a bound on every seed (accuracy 0 under a strong attack) keeps
    # its zero-width interval, so a threshold on it can still be resolved.
    iv = S.t_interval([0.0, 0.0, 0.0])
    assert (iv.lo, iv.hi) == (0.0, 0.0) and iv.relative_to(0.5) == -1


def test_one_common_seed_of_methods_with_more_seeds_gets_no_test_set_interval(tmp_path) -> None:
    # Seed 0's saved outputs alone would resolve a - b (as in the bootstrap case above), but
    # a ran three seeds: one seed's test-set bootstrap would hide its seed-to-seed noise.
    n = 2000
    y = np.zeros(n, dtype=np.int64)
    (tmp_path / "runs").mkdir()
    for name, wrong in (("a", 20), ("b", 100)):
        pred = y.copy()
        pred[:wrong] = 1
        np.savez_compressed(tmp_path / "runs" / f"{name}.npz", **{"test.y": y, "test.pred": pred})
    runs = [_run("a", 0, 1.0, "a.npz"), _run("a", 1, 3.0), _run("a", 2, 6.0)]
    runs.append(_run("b", 0, 5.0, "b.npz"))
    view = ResultsView({"runs": runs}, tmp_path)
    c = C.compare(view, "mnist", "a", "b", C.STATS["error_pct"])
    assert c.value == pytest.approx(-4.0) and c.lo is None and c.sign == 0
    assert "one seed in common (3 and 1 seeds)" in c.how
    assert C.best(view, "mnist", ["a", "b"], C.STATS["error_pct"])[1] is False


@pytest.mark.parametrize("n_ood", [20, 37, 200])
def test_fpr95_bootstrap_statistic_is_the_recorded_metric(n_ood: int) -> None:
    # With unit weights the bootstrap's FPR95 (OOD+) must be metrics.fpr95 itself, so that
    # a one-seed interval is centred on the number the run recorded; a weight of 2 acts as a
    # duplicated example.
    rng = np.random.default_rng(n_ood)
    h_in = rng.gamma(2.0, 0.2, 300)
    h_ood = rng.gamma(4.0, 0.3, n_ood)
    outputs = {"test.entropy": h_in, "ood.x.entropy": h_ood}
    stat = C.ood_stat("x", "fpr95").weighted
    ones = {"test": np.ones(len(h_in)), "ood:x": np.ones(n_ood)}
    assert stat(outputs, ones) == pytest.approx(M.fpr95(h_in, h_ood))
    w = dict(ones, **{"ood:x": np.where(np.arange(n_ood) < 3, 2.0, 1.0)})
    assert stat(outputs, w) == pytest.approx(M.fpr95(h_in, np.concatenate([h_ood, h_ood[:3]])))
    stat_in = C.ood_stat("x", "fpr95_in").weighted
    assert stat_in(outputs, ones) == pytest.approx(M.fpr95_in(h_in, h_ood))


def test_intervals_follow_the_views_level() -> None:
    # Paired differences with t = 1.5 / (0.5 / sqrt 3) = 5.20 on 2 dof: resolved at 95%
    # (t_0.975 = 4.30) but not at 97.5% (t_0.9875 = 6.21); scipy gives both quantiles.
    from scipy import stats as sps

    runs = [_run("a", s, e) for s, e in enumerate([2.0, 2.5, 3.0])]
    runs += [_run("b", s, 1.0) for s in range(3)]
    view = ResultsView({"runs": runs})
    stat = C.STATS["error_pct"]
    assert C.compare(view, "mnist", "a", "b", stat).sign == 1
    with view.at_level(0.975):
        c = C.compare(view, "mnist", "a", "b", stat)
        half = sps.t.ppf(0.9875, 2) * 0.5 / math.sqrt(3)
        assert (c.lo, c.hi) == pytest.approx((1.5 - half, 1.5 + half)) and c.sign == 0
    assert view.level == S.LEVEL and C.compare(view, "mnist", "a", "b", stat).sign == 1
    with pytest.raises(ValueError):
        with view.at_level(1.0):
            pass


def test_a_claim_differs_only_when_holm_corrected_intervals_still_say_so() -> None:
    from uqbench.paper import Claim, Verdict

    stat = C.STATS["error_pct"]

    def below(others: tuple[str, ...]) -> Claim:
        def check(v: ResultsView) -> Verdict:  # "a's error is below each of others'"
            conds = [C.order(v, "mnist", "a", m, stat) for m in others]
            return Verdict("differs" if min(conds) < 0 else "inconclusive", "e", len(conds))

        return Claim("c", "4", "mnist", "t", "f", "p", check)

    def view(b: list[float]) -> ResultsView:
        runs = [_run("a", s, e) for s, e in enumerate([2.0, 2.5, 3.0])]
        runs += [_run("b", s, e) for s, e in enumerate(b)]
        runs += [_run("c", s, e) for s, e in enumerate([2.5, 2.0, 3.5])]  # a - c unresolved
        return ResultsView({"runs": runs})

    # a - b = 1, 1.5, 2: t = 5.2, past t_0.975(2) = 4.30 but not the t_0.9875(2) = 6.21
    # that Holm asks of the first of 2 conditions.
    weak = view([1.0, 1.0, 1.0])
    assert below(("b",)).verdict(weak).status == "differs"  # one condition: no correction
    v = below(("b", "c")).verdict(weak)
    assert v.status == "inconclusive" and "not with Holm's correction over its 2" in v.evidence
    # a - b = 1.0, 1.1, 1.1: t = 32, resolved at any level here.
    v = below(("b", "c")).verdict(view([1.0, 1.4, 1.9]))
    assert v.status == "differs" and "with Holm's correction over its 2" in v.evidence


def test_each_ordering_of_the_l2_overconfidence_claim_is_its_own_condition() -> None:
    # L2 below each of 4 others, plus its "almost zero" threshold: 5 conditions, so Holm's
    # correction asks 99% intervals of a "differs".
    from uqbench.paper import CLAIMS

    medians = {"l2": 0.45, "dropout": 1.1, "ffg": 1.4, "fflu": 0.95, "mnf": 1.5}
    runs = []
    for m, x in medians.items():
        for s, jitter in enumerate([0.0, 0.05, -0.03]):
            r = _run(m, s, 1.0)
            r["metrics"]["ood"] = {"notmnist": {"median_entropy": x + jitter * (1 + len(m))}}
            runs.append(r)
    claim = next(c for c in CLAIMS if c.id == "notmnist-l2-most-overconfident")
    assert claim.check(ResultsView({"runs": runs})).conditions == 5


def _shared(x: np.ndarray) -> float:
    """Mean over pairs of rows s != t of the covariance of rows s and t (over columns)."""
    c = np.cov(x, bias=True)
    k = len(x)
    return float((c.sum() - np.trace(c)) / (k * (k - 1)))


def test_test_noise_adds_the_shared_test_sets_variance_to_the_seeds(tmp_path) -> None:
    # Three seeds of a and b on one shared test set of n examples. Seed s of a errs on the
    # first 20 + 5s examples, seed s of b on examples 10 .. 10 + 60 + 10s: the per-seed
    # differences spread (training noise) and the test set itself is a sample (test noise).
    n, k = 2000, 3
    y = np.zeros(n, dtype=np.int64)
    (tmp_path / "runs").mkdir()
    wrong = {"a": [range(20 + 5 * s) for s in range(k)]}
    wrong["b"] = [range(10, 70 + 10 * s) for s in range(k)]
    runs, per_example = [], {}
    for m, sets in wrong.items():
        per_example[m] = np.zeros((k, n))
        for s, idx in enumerate(sets):
            pred = y.copy()
            pred[list(idx)] = 1
            per_example[m][s, list(idx)] = 100.0  # error in percentage points
            np.savez_compressed(
                tmp_path / "runs" / f"{m}{s}.npz", **{"test.y": y, "test.pred": pred}
            )
            runs.append(_run(m, s, 100 * len(idx) / n, f"{m}{s}.npz"))
    stat = C.STATS["error_pct"]
    d = per_example["a"].mean(1) - per_example["b"].mean(1)  # per-seed differences
    t2 = scipy_stats.t.ppf(0.975, k - 1)

    plain = C.compare(ResultsView({"runs": runs}, tmp_path), "mnist", "a", "b", stat)
    assert plain.hi - plain.value == pytest.approx(t2 * d.std(ddof=1) / math.sqrt(k))

    view = ResultsView({"runs": runs}, tmp_path, test_noise=True)
    c = C.compare(view, "mnist", "a", "b", stat)
    # Over resampled examples two seeds' means of per-example values x_s, x_t covary by
    # cov(x_s, x_t) / n (closed form); the noise the seeds share is its mean over pairs.
    x = per_example["a"] - per_example["b"]
    test_var = _shared(x) / n
    half = t2 * math.sqrt(d.var(ddof=1) / k + test_var)
    assert c.value == pytest.approx(d.mean())
    assert c.hi - c.value == pytest.approx(half, rel=1e-9)
    assert c.value - c.lo == pytest.approx(half, rel=1e-9)
    assert c.hi - c.lo > plain.hi - plain.lo and "test-set bootstrap" in c.how

    # One method's mean: the same, with x its own per-example errors.
    iv = C.interval(view, "mnist", "b", stat)
    e = per_example["b"].mean(1)
    half = t2 * math.sqrt(e.var(ddof=1) / k + _shared(per_example["b"]) / n)
    assert iv.hi - iv.value == pytest.approx(half, rel=1e-9)

    # Seeds whose models err on different examples share no test-set noise: their spread
    # already holds it all, and nothing is added.
    runs_apart = []
    for m, first in (("a", 0), ("b", 1000)):
        for s in range(k):
            pred = y.copy()
            pred[first + 100 * s : first + 100 * s + 30 + 10 * s] = 1
            np.savez_compressed(
                tmp_path / "runs" / f"x{m}{s}.npz", **{"test.y": y, "test.pred": pred}
            )
            runs_apart.append(_run(m, s, 100 * (30 + 10 * s) / n, f"x{m}{s}.npz"))
    apart = C.compare(
        ResultsView({"runs": runs_apart}, tmp_path, test_noise=True), "mnist", "a", "b", stat
    )
    alone = C.compare(ResultsView({"runs": runs_apart}, tmp_path), "mnist", "a", "b", stat)
    assert alone.lo is None  # the same difference on every seed: no interval to widen
    iv_apart = C.interval(
        ResultsView({"runs": runs_apart}, tmp_path, test_noise=True), "mnist", "a", stat
    )
    iv_alone = C.interval(ResultsView({"runs": runs_apart}, tmp_path), "mnist", "a", stat)
    assert (iv_apart.lo, iv_apart.hi) == pytest.approx((iv_alone.lo, iv_alone.hi))
    assert "0% of the variance" in iv_apart.how and apart.lo is None

    # Outputs without the arrays a statistic reads (a task that saves fewer): the seeds'
    # interval, saying why; with one seed, no interval rather than a KeyError.
    with_ece = [
        {**r, "metrics": {**r["metrics"], "ece": 0.01 * (1 + i)}} for i, r in enumerate(runs)
    ]
    view = ResultsView({"runs": with_ece}, tmp_path, test_noise=True)
    ece = C.interval(view, "mnist", "a", C.STATS["ece"])
    assert ece.lo is not None and "seeds only: a seed 0's outputs lack" in ece.how
    one = ResultsView({"runs": [r for r in with_ece if r["seed"] == 1]}, tmp_path)
    assert C.interval(one, "mnist", "a", C.STATS["ece"]).lo is None
    assert C.compare(one, "mnist", "a", "b", C.STATS["ece"]).lo is None

    # A run without saved outputs: the seeds' interval, saying why.
    runs[0] = {k_: v_ for k_, v_ in runs[0].items() if k_ != "predictions"}
    c = C.compare(ResultsView({"runs": runs}, tmp_path, test_noise=True), "mnist", "a", "b", stat)
    assert (c.lo, c.hi) == (plain.lo, plain.hi)
    assert "seeds only: a seed 0 saved no per-example outputs" in c.how
    # ... or one whose saved outputs cannot be read: said so.
    runs[0] = {**runs[0], "predictions": "gone.npz"}
    c = C.compare(ResultsView({"runs": runs}, tmp_path, test_noise=True), "mnist", "a", "b", stat)
    assert "a seed 0's saved per-example outputs are missing or unreadable" in c.how


def _pool_runs(tmp_path, methods: dict[str, float], k: int = 3, pool: int = 5000, n: int = 2000):
    """CIFAR-5's shape: each seed scores its own ``n`` of a pool of test images (every method
    of a seed the same ones), and every model errs on the same hard images plus some of its
    own (rate per method). Saved with and without ``test.index`` (and an OOD set's entropies
    and positions, a pool of its own); returns the runs and each run's per-example errors."""
    rng = np.random.default_rng(1)
    hard = rng.random(pool) < 0.3
    (tmp_path / "runs").mkdir(exist_ok=True)
    runs, values, subsets = [], {}, {}
    for s in range(k):
        idx = np.sort(rng.choice(pool, n, replace=False))
        ood_idx = np.sort(rng.choice(pool, n, replace=False))
        subsets[s] = idx
        for m, rate in methods.items():
            wrong = hard[idx] | (rng.random(n) < rate + 0.005 * s)
            arrays = {
                "test.y": np.zeros(n, dtype=np.int64),
                "test.pred": wrong.astype(np.int64),  # label 0 everywhere: a 1 is an error
                "test.entropy": np.where(wrong, 1.0, 0.2) + 0.01 * rng.random(n),
                "ood.far.entropy": 0.5 + hard[ood_idx] + 0.01 * rng.random(n),
            }
            for tag, extra in (
                ("with", {"test.index": idx, "ood.far.index": ood_idx}),
                ("test-only", {"test.index": idx}),
                ("ood-only", {"ood.far.index": ood_idx}),
                ("without", {}),
            ):
                np.savez_compressed(tmp_path / "runs" / f"{tag}-{m}{s}.npz", **arrays, **extra)
            runs.append(_run(m, s, 100 * wrong.mean(), f"with-{m}{s}.npz"))
            auroc = M.auroc(arrays["test.entropy"], arrays["ood.far.entropy"])
            runs[-1]["metrics"]["ood"] = {"far": {"auroc": auroc}}
            values[m, s] = 100.0 * wrong
    return runs, values, subsets


def _saved_as(runs: list[dict], tag: str) -> list[dict]:
    return [{**r, "predictions": r["predictions"].replace("with-", f"{tag}-")} for r in runs]


def _shared_closed_form(x: dict[int, np.ndarray], subsets: dict[int, np.ndarray]) -> float:
    """The Poisson bootstrap's covariance of two seeds' means (linearised), averaged over
    pairs: the sum over the images both scored of (x_s - mean_s)(x_t - mean_t) / (n_s n_t)."""
    out = []
    for s in x:
        for t in x:
            if s != t:
                _, i_s, i_t = np.intersect1d(subsets[s], subsets[t], return_indices=True)
                a, b = x[s][i_s] - x[s].mean(), x[t][i_t] - x[t].mean()
                out.append(float((a * b).sum()) / (len(x[s]) * len(x[t])))
    return float(np.mean(out))


def test_test_noise_pairs_seeds_that_scored_different_subsets_of_one_pool(tmp_path) -> None:
    # Saved positions pair the seeds image by image; by order they are different images,
    # and the shared noise comes out about 0.
    runs, values, subsets = _pool_runs(tmp_path, {"a": 0.05, "b": 0.12})
    stat, k = C.STATS["error_pct"], 3
    t2 = scipy_stats.t.ppf(0.975, k - 1)
    view = ResultsView({"runs": runs}, tmp_path, test_noise=True)

    x = {s: values["a", s] for s in range(k)}
    seeds_var = np.var([v.mean() for v in x.values()], ddof=1) / k
    shared = _shared_closed_form(x, subsets)
    assert shared > 0.3 * seeds_var  # a share the seeds' spread cannot show
    iv = C.interval(view, "mnist", "a", stat)
    assert iv.hi - iv.value == pytest.approx(t2 * math.sqrt(seeds_var + shared), rel=1e-9)
    assert "paired by order" not in iv.how

    # A paired difference: both methods of a seed scored the same images.
    d = {s: values["a", s] - values["b", s] for s in range(k)}
    d_var = np.var([v.mean() for v in d.values()], ddof=1) / k
    c = C.compare(view, "mnist", "a", "b", stat)
    half = t2 * math.sqrt(d_var + _shared_closed_form(d, subsets))
    assert c.hi - c.value == pytest.approx(half, rel=1e-9)

    # By order (runs saved before positions were): about the seeds' interval alone.
    plain = C.interval(ResultsView({"runs": runs}, tmp_path), "mnist", "a", stat)
    by_order = ResultsView({"runs": _saved_as(runs, "without")}, tmp_path, test_noise=True)
    unpaired = C.interval(by_order, "mnist", "a", stat)
    assert unpaired.hi - unpaired.value < 1.1 * (plain.hi - plain.value) < iv.hi - iv.value
    assert C.unpaired_tasks(by_order) == ["mnist"] and C.unpaired_tasks(view) == []
    # Runs of which only some saved positions: the group is paired by order for all.
    mixed = [runs[0], *_saved_as(runs, "without")[1:]]
    got = C.interval(ResultsView({"runs": mixed}, tmp_path, test_noise=True), "mnist", "a", stat)
    assert got.hi - got.value < 1.1 * (plain.hi - plain.value)


def test_closed_form_test_noise_is_what_many_bootstrap_replicates_estimate(
    tmp_path, monkeypatch
) -> None:
    """For a mean over examples the shared noise is computed in closed form; it must be the
    covariance the Poisson bootstrap itself estimates, here from 20,000 replicates."""
    import dataclasses

    runs, _, _ = _pool_runs(tmp_path, {"a": 0.05, "b": 0.12}, k=3, pool=600, n=250)
    view = ResultsView({"runs": runs}, tmp_path)
    # (Differences are in the closed-form tests above; here both methods err on the same hard
    # images, so a difference shares no noise.)
    cases = [("a", None, C.STATS["error_pct"]), ("b", None, C.ood_stat("far", "mean_entropy"))]
    closed = [C._test_variance(view, "mnist", [0, 1, 2], a, b, st) for a, b, st in cases]
    monkeypatch.setattr(S, "N_BOOT_VAR", 20_000)
    for (a, b, st), (var, note) in zip(cases, closed, strict=True):
        mc, mc_note = C._test_variance(
            view, "mnist", [0, 1, 2], a, b, dataclasses.replace(st, linear=None)
        )
        assert note == "; its covariance in closed form" and mc_note == ""
        # Monte Carlo error of a covariance of correlated replicates: a few percent here.
        assert var > 0 and var == pytest.approx(mc, rel=0.1)


def test_closed_form_test_noise_of_differences_over_different_subsets_and_fgsm_points(
    tmp_path, monkeypatch
) -> None:
    """The two methods of a seed scored different subsets of one pool, of different sizes,
    one with an image twice; FGSM's points are some of the test examples (with repeats): the
    closed form must still be what 20,000 Poisson bootstrap replicates estimate."""
    import dataclasses

    rng = np.random.default_rng(11)
    pool, k = 300, 3
    hard = rng.random(pool) < 0.3
    (tmp_path / "runs").mkdir()
    runs = []
    for s in range(k):
        # Only a errs on the hard images (and finds them uncertain): a - b shares their noise.
        for m, n, rate, h in (("a", 120, 0.05, hard), ("b", 90, 0.2, np.zeros(pool, bool))):
            idx = np.sort(rng.choice(pool, n, replace=False))
            idx[1] = idx[0]  # one image scored twice
            wrong = h[idx] | (rng.random(n) < rate)
            points = rng.integers(0, n, 60)  # FGSM's attacked test examples, with repeats
            eps_wrong = h[idx][points] | (rng.random((4, 60)) < rate + 0.2 * np.arange(4)[:, None])
            arrays = {
                "test.y": np.zeros(n, dtype=np.int64),
                "test.pred": wrong.astype(np.int64),
                "test.index": idx,
                "fgsm.index": points,
                "fgsm.correct": ~eps_wrong,
                "fgsm.entropy": rng.random((4, 60)) + h[idx][points],
            }
            np.savez_compressed(tmp_path / "runs" / f"{m}{s}.npz", **arrays)
            runs.append(_run(m, s, 100 * wrong.mean(), f"{m}{s}.npz"))
    view = ResultsView({"runs": runs}, tmp_path)
    cases = [C.STATS["error_pct"], C.fgsm_stat("adv_accuracy"), C.fgsm_stat("last_entropy")]
    closed = [C._test_variance(view, "mnist", list(range(k)), "a", "b", st) for st in cases]
    monkeypatch.setattr(S, "N_BOOT_VAR", 20_000)
    for st, (var, note) in zip(cases, closed, strict=True):
        mc, _ = C._test_variance(
            view, "mnist", list(range(k)), "a", "b", dataclasses.replace(st, linear=None)
        )
        assert note == "; its covariance in closed form"
        assert var > 0 and var == pytest.approx(mc, rel=0.1)


def _linear_outputs(rng: np.random.Generator, n: int = 40) -> dict[str, np.ndarray]:
    y = rng.integers(0, 3, n)
    mean, var = rng.normal(size=n), rng.uniform(0.1, 2.0, n)
    return {
        "test.y": y,
        "test.pred": np.where(rng.random(n) < 0.7, y, (y + 1) % 3),
        "test.logp_true": np.log(rng.uniform(0.05, 1.0, n)),
        "test.brier": rng.uniform(0.0, 2.0, n),
        "test.entropy": rng.uniform(0.0, 1.0, n),
        "ood.far.entropy": rng.uniform(0.0, 1.0, n + 3),
        "fgsm.correct": rng.random((4, 15)) < 0.5,
        "fgsm.entropy": rng.uniform(0.0, 1.0, (4, 15)),
        "inside.y": mean + rng.normal(size=n) * np.sqrt(var),
        "inside.mean": mean,
        "inside.var": var,
    }


def test_a_statistic_with_a_closed_form_is_the_mean_of_its_per_example_values() -> None:
    """``Stat.linear``'s contract, under random bootstrap weights, for every such statistic."""
    rng = np.random.default_rng(7)
    out = _linear_outputs(rng)
    out["ood.far.entropy"][:3] = 2.5  # past the ECDF area's range [0, ln 10]: clipped there
    stats = [
        *C.STATS.values(),
        C.ood_stat("far", "mean_entropy"),
        C.ood_stat("far", "ecdf_area"),
        C.ood_stat("far", "auroc"),
        *(C.fgsm_stat(w) for w in ("adv_accuracy", "last_entropy", "last_accuracy")),
        C.regression_stat("loglik_inside"),
        C.regression_stat("coverage_3std_inside"),
    ]
    sizes = {"test": 40, "ood:far": 43, "fgsm": 15, "inside": 40}
    linear = [st for st in stats if st.linear is not None]
    assert {st.name for st in linear} == {
        "error_pct", "nll", "brier", "ood.far.mean_entropy", "ood.far.ecdf_area",
        "fgsm.adv_accuracy", "fgsm.last_entropy", "fgsm.last_accuracy", "loglik_inside",
        "coverage_3std_inside",
    }  # fmt: skip
    for _ in range(5):
        w = {g: rng.poisson(1.0, n).astype(float) for g, n in sizes.items()}
        for st in linear:
            group, v = st.linear(out)
            assert group in st.groups and len(v) == sizes[group]
            assert S.w_mean(v, w[group]) == pytest.approx(st.weighted(out, w), rel=1e-12)


def test_test_noise_pairs_each_group_its_own_way(tmp_path) -> None:
    """An AUROC reads the test and an OOD set's examples: each group is paired by identity
    where every run saved its positions, else by order, and ``how`` says which."""
    runs, _, _ = _pool_runs(tmp_path, {"a": 0.05})
    auroc = C.ood_stat("far", "auroc")
    both = C.interval(ResultsView({"runs": runs}, tmp_path, test_noise=True), "mnist", "a", auroc)
    view = ResultsView({"runs": _saved_as(runs, "test-only")}, tmp_path, test_noise=True)
    part = C.interval(view, "mnist", "a", auroc)
    assert "paired by order" not in both.how
    assert "ood:far paired by order (no saved positions)" in part.how
    # The OOD entropies follow the hard images of the OOD pool, which seeds share: pairing
    # them by order loses that part of the shared noise.
    assert part.hi - part.value < both.hi - both.value


def test_an_ood_sets_entropy_statistics_do_not_depend_on_how_the_test_set_was_saved(
    tmp_path,
) -> None:
    """The median and mean entropy and the ECDF area of an OOD set read that set's examples
    alone: whether the test examples' positions were saved changes neither their shared
    noise nor its note. The AUROC, which reads both, pairs the test examples by order."""
    runs, _, _ = _pool_runs(tmp_path, {"a": 0.05})
    views = {
        tag: ResultsView({"runs": _saved_as(runs, tag)}, tmp_path) for tag in ("with", "ood-only")
    }
    for what in ("median_entropy", "mean_entropy", "ecdf_area"):
        stat = C.ood_stat("far", what)
        got = {
            tag: C._test_variance(v, "mnist", [0, 1, 2], "a", None, stat)
            for tag, v in views.items()
        }
        assert got["ood-only"] == got["with"] and got["with"][0] > 0, what
        assert "paired by order" not in got["with"][1]
    auroc = C.ood_stat("far", "auroc")
    note = C._test_variance(views["ood-only"], "mnist", [0, 1, 2], "a", None, auroc)[1]
    assert "test paired by order (no saved positions)" in note


def test_test_noise_by_identity_equals_by_order_on_one_whole_test_set(tmp_path) -> None:
    # MNIST's shape: every seed scores the whole test set, so position i is image i and
    # both pairings estimate the same shared noise.
    n, k = 3000, 3
    rng = np.random.default_rng(2)
    hard = rng.random(n) < 0.1
    (tmp_path / "runs").mkdir()
    runs = []
    for s in range(k):
        wrong = hard | (rng.random(n) < 0.02)
        base = {"test.y": np.zeros(n, dtype=np.int64), "test.pred": wrong.astype(np.int64)}
        np.savez_compressed(tmp_path / "runs" / f"o{s}.npz", **base)
        np.savez_compressed(tmp_path / "runs" / f"i{s}.npz", **base, **{"test.index": np.arange(n)})
        runs.append(_run("a", s, 100 * wrong.mean(), f"o{s}.npz"))
    stat = C.STATS["error_pct"]
    order = C._test_variance(
        ResultsView({"runs": runs}, tmp_path), "mnist", [0, 1, 2], "a", None, stat
    )
    runs_i = [{**r, "predictions": r["predictions"].replace("o", "i")} for r in runs]
    ident = C._test_variance(
        ResultsView({"runs": runs_i}, tmp_path), "mnist", [0, 1, 2], "a", None, stat
    )
    assert ident[0] == pytest.approx(order[0], rel=1e-12)  # the same units, in closed form
    assert ident[1] == order[1] == "; its covariance in closed form"
    # A statistic without a closed form (the median entropy) takes the bootstrap's replicates:
    # different resamples for the two pairings, the same within their noise.
    for r in runs:
        with np.load(tmp_path / "runs" / r["predictions"]) as z:
            ent = {"test.entropy": 0.5 + z["test.pred"] + rng.random(n)}
        for tag in ("o", "i"):
            path = tmp_path / "runs" / r["predictions"].replace("o", tag)
            with np.load(path) as z:
                arrays = {key: z[key] for key in z.files}
            np.savez_compressed(path, **arrays, **ent)
    median = C.STATS["test_median_entropy"]
    order = C._test_variance(
        ResultsView({"runs": runs}, tmp_path), "mnist", [0, 1, 2], "a", None, median
    )
    ident = C._test_variance(
        ResultsView({"runs": runs_i}, tmp_path), "mnist", [0, 1, 2], "a", None, median
    )
    assert order[0] > 0 and ident[0] == pytest.approx(order[0], rel=0.25)
    assert ident[1] == order[1] == ""


def test_saved_positions_that_do_not_fit_their_examples_are_not_used(tmp_path) -> None:
    runs, _, _ = _pool_runs(tmp_path, {"a": 0.05}, k=2, pool=300, n=100)
    bad = tmp_path / "runs" / "with-a1.npz"
    with np.load(bad) as z:
        arrays = {key: z[key] for key in z.files}
    arrays["test.index"] = arrays["test.index"][:-1]  # one position short
    np.savez_compressed(bad, **arrays)
    iv = C.interval(
        ResultsView({"runs": runs}, tmp_path, test_noise=True), "mnist", "a", C.STATS["error_pct"]
    )
    assert "seeds only: saved positions of the test examples do not match them" in iv.how
    # FGSM's points are test examples: their positions are the attacked test examples'.
    out = {"test.index": np.array([7, 3, 9]), "fgsm.index": np.array([2, 0])}
    assert C._positions("fgsm", out).tolist() == [9, 7]


def test_t_with_test_noise_by_hand() -> None:
    # values (1, 2, 3): s^2 / k = 1/3; with test_var 1/6 the se is sqrt(1/2).
    iv = S.t_with_test_noise([1.0, 2.0, 3.0], 1 / 6)
    assert iv.value == 2.0 and iv.hi - 2.0 == pytest.approx(4.302653 * math.sqrt(0.5), rel=1e-6)
    # No test noise: the seeds' t-interval; the same value on every seed: test noise alone.
    assert S.t_with_test_noise([1.0, 2.0, 3.0], 0.0).lo == pytest.approx(S.t_interval([1, 2, 3]).lo)
    iv = S.t_with_test_noise([0.5, 0.5, 0.5], 0.01)
    assert iv.hi - 0.5 == pytest.approx(4.302653 * 0.1, rel=1e-6)
    assert S.t_with_test_noise([0.5, 0.5], 0.0).lo is None
    with pytest.raises(ValueError):
        S.t_with_test_noise([0.5], 0.01)


def test_an_interval_is_clipped_to_the_values_the_statistic_can_take():
    # three seeds of an error rate near 0: the t-interval reaches below 0
    iv = S.t_interval([0.001, 0.004, 0.019])
    assert iv.lo < 0
    c = S.clipped(iv, 0.0, 1.0)
    assert c.lo == 0.0 and c.hi == iv.hi and c.value == iv.value and c.n == 3
    assert S.clipped(iv, None, None) is iv
    assert S.clipped(S.Interval(0.5, None, None, 1, "x"), 0.0, 1.0).lo is None
    from uqbench.report.style import interval_text

    assert interval_text(iv, 3).startswith("0.008 ± ")
    assert interval_text(c, 3) == f"0.008 [0.000, {iv.hi:.3f}]"
