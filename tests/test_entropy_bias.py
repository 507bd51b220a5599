"""The entropy sampling-bias benchmark: its fit and entropies against closed forms, and its
resume (rows measured before are reused, their seeds' half-widths recomputed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from uqbench.benchmarks import entropy_bias as eb

from uqbench.stats import t_quantile


def test_extrapolate_recovers_a_one_over_s_curve() -> None:
    h = {s: 1.7 - 0.35 / s for s in eb.SAMPLE_COUNTS}
    h_inf, c = eb.extrapolate(h)
    assert h_inf == pytest.approx(1.7, abs=1e-12)
    assert c == pytest.approx(0.35, abs=1e-12)


class _Alternating:
    """Samples alternate between two one-hot logits (classes 0 and 1) for every input."""

    def sample_outputs(self, x: torch.Tensor, n: int) -> torch.Tensor:
        logits = torch.full((n, len(x), 3), -1e4)
        logits[0::2, :, 0] = 0.0
        logits[1::2, :, 1] = 0.0
        return logits


class _Agreeing:
    """Every sample is the same softmax (probabilities 0.5, 0.25, 0.25)."""

    def sample_outputs(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return torch.log(torch.tensor([0.5, 0.25, 0.25])).expand(n, len(x), 3).clone()


def test_entropy_by_samples_against_closed_forms() -> None:
    x = torch.zeros(7, 1)
    h = eb.entropy_by_samples(_Alternating(), x, 20, [1, 2, 10, 20], batch=3)
    # one sample: a one-hot prediction; an even count: half on each of two classes
    assert h[1] == pytest.approx(0.0, abs=1e-6)
    for s in (2, 10, 20):
        assert h[s] == pytest.approx(math.log(2), abs=1e-6)
    same = eb.entropy_by_samples(_Agreeing(), x, 20, [1, 5, 20])
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert all(v == pytest.approx(expected, abs=1e-6) for v in same.values())


def _results(folder: Path, entropies: list[float]) -> None:
    runs = [
        {
            "method": "ffg",
            "task": "mnist",
            "seed": i,
            "run_hash": f"hash{i}",
            "checkpoint": str(folder / "missing.pt"),
            "config": {"eval": {"test_samples": 20}, "data": {}},
            "metrics": {"test_entropy": {"mean": h}, "ood": {}},
        }
        for i, h in enumerate(entropies)
    ]
    (folder / "results.json").write_text(json.dumps({"runs": runs}))


def test_resume_reuses_rows_and_recomputes_the_half_width(tmp_path: Path) -> None:
    _results(tmp_path, [0.10, 0.12])
    h = {str(s): 0.2 - 0.1 / s for s in (1, 2, 5, 10, 20, 50, 100)}
    row = {
        "method": "ffg",
        "task": "mnist",
        "seed": 0,
        "run_hash": "hash0",
        "set": "test",
        "suite_samples": 20,
        "h_by_samples": h,
        "h_inf": 0.2,
        "bias_at_suite_samples": -0.005,
    }
    settings = {"n": 50, "repeats": 1, "max_samples": 100}
    (tmp_path / "entropy-bias.json").write_text(json.dumps({**settings, "rows": [row]}))
    # The checkpoint does not exist: the run can only come from the earlier rows.
    args = [str(tmp_path), "--n", "50", "--repeats", "1", "--methods", "ffg"]
    assert eb.main(args) == 0
    out = json.loads((tmp_path / "entropy-bias.json").read_text())
    assert len(out["rows"]) == 1 and out["rows"][0]["bias_at_suite_samples"] == -0.005
    assert out["rows"][0]["n_seeds"] == 2
    sd = math.sqrt(((0.10 - 0.11) ** 2 + (0.12 - 0.11) ** 2) / 1)
    hw = t_quantile(0.975, 1) * sd / math.sqrt(2)
    assert out["rows"][0]["seed_interval_half_width"] == pytest.approx(hw)
    assert "| ffg | mnist | test | 20 |" in (tmp_path / "entropy-bias.md").read_text()
    # Other settings: the earlier rows do not count, and without a checkpoint nothing is made.
    assert eb.main([*args[:2], "100", *args[3:]]) == 0
    assert json.loads((tmp_path / "entropy-bias.json").read_text())["rows"] == []
