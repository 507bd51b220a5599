"""Entropy decomposition, AUPR, risk-coverage and the shift transforms, against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from uqbench import metrics as M


def test_decomposition_of_two_samples_that_disagree_completely() -> None:
    # Two certain samples on different classes: each sample has entropy 0 (aleatoric 0),
    # the predictive is (1/2, 1/2, 0), entropy ln 2, all of it epistemic.
    big = 60.0
    logits = torch.tensor([[[big, 0.0, 0.0]], [[0.0, big, 0.0]]], dtype=torch.float64)
    d = M.entropy_decomposition(logits)
    assert d["expected"].item() == pytest.approx(0.0, abs=1e-20)
    assert d["total"].item() == pytest.approx(math.log(2), rel=1e-12)
    assert d["mutual_info"].item() == pytest.approx(math.log(2), rel=1e-12)


def test_decomposition_of_samples_that_agree_has_no_mutual_info() -> None:
    one = torch.tensor([[1.0, 2.0, -0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    logits = one.expand(5, 2, 3)
    d = M.entropy_decomposition(logits)
    p = torch.softmax(one, -1)
    closed = -(p * p.log()).sum(-1)
    assert torch.allclose(d["total"], closed, atol=1e-12)
    assert torch.allclose(d["expected"], closed, atol=1e-12)
    assert torch.allclose(d["mutual_info"], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert d["total"][1].item() == pytest.approx(math.log(3), rel=1e-12)  # uniform row


def test_decomposition_sums_and_mutual_info_is_nonnegative() -> None:
    logits = torch.randn(6, 50, 4, generator=torch.Generator().manual_seed(1)) * 3
    d = M.entropy_decomposition(logits)
    assert torch.allclose(d["expected"] + d["mutual_info"], d["total"], atol=1e-10)
    assert (d["mutual_info"] >= 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupr_in_and_out_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0.0, 1.0, 40).round(1)  # rounding makes ties
    s_ood = rng.normal(0.8, 1.0, 25).round(1)
    labels = np.r_[np.zeros(40), np.ones(25)]
    scores = np.r_[s_in, s_ood]
    assert M.aupr_out(s_in, s_ood) == pytest.approx(average_precision_score(labels, scores))
    assert M.aupr_in(s_in, s_ood) == pytest.approx(average_precision_score(1 - labels, -scores))


def test_aupr_perfect_and_hand_case() -> None:
    assert M.aupr_out([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert M.aupr_in([0.1, 0.2], [0.8, 0.9]) == 1.0
    # Ranking by score: ood(0.9), in(0.5), ood(0.3): precisions at the two OOD hits 1 and 2/3.
    assert M.aupr_out([0.5], [0.9, 0.3]) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError):
        M.aupr_in([], [1.0])


def test_risk_coverage_hand_case() -> None:
    # Confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (wrong).
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    y = torch.tensor([0, 0, 0, 0])
    rc = M.risk_coverage(probs, y)
    assert rc["coverage"] == [0.25, 0.5, 0.75, 1.0]
    assert rc["risk"] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert M.aurc(probs, y) == pytest.approx((0 + 0.5 + 1 / 3 + 0.5) / 4)


def test_aurc_is_lower_when_errors_are_least_confident() -> None:
    y = torch.zeros(4, dtype=torch.long)
    good = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.45, 0.55]])  # errors last
    bad = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.6, 0.4], [0.55, 0.45]])  # errors first
    # good: risks 0, 0, 1/3, 1/2; bad: 1, 1, 2/3, 1/2
    assert M.aurc(good, y) == pytest.approx((1 / 3 + 1 / 2) / 4)
    assert M.aurc(bad, y) == pytest.approx((1 + 1 + 2 / 3 + 1 / 2) / 4)


def test_thin_curve_keeps_ends() -> None:
    xs = [i / 999 for i in range(1000)]
    t = M.thin_curve(xs, xs, 11)
    assert len(t["x"]) == 11 and t["x"][0] == 0.0 and t["x"][-1] == 1.0


# -- the shift transforms (uqbench.shift) ---------------------------------------------------

from uqbench import shift as S  # noqa: E402


def _image(c: int = 1, n: int = 2, size: int = 28) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(3))


def test_rotation_by_right_angles_matches_rot90() -> None:
    x = _image()
    assert torch.equal(S.rotate(x, 0), x)
    # Counter-clockwise by 90 degrees = rot90 over (H, W) with k = 1.
    assert torch.allclose(S.rotate(x, 90), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5)
    assert torch.allclose(S.rotate(x, 180), x.flip(-1).flip(-2), atol=1e-5)


def test_noise_corruptions_have_the_cifar10c_spread_and_are_seeded() -> None:
    x = torch.full((4, 3, 32, 32), 0.5)
    state = torch.random.get_rng_state()
    g1 = S.corrupt(x, "gaussian_noise", 1)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(g1, S.corrupt(x, "gaussian_noise", 1))  # fixed
    assert (g1 - x).std().item() == pytest.approx(0.04, rel=0.05)
    assert (S.corrupt(x, "gaussian_noise", 5) - x).std().item() == pytest.approx(0.10, rel=0.05)
    # Shot noise: Poisson(x c) / c has mean x and variance x / c (c = 500 at severity 1).
    shot = S.corrupt(x, "shot_noise", 1)
    assert shot.mean().item() == pytest.approx(0.5, abs=0.002)
    assert shot.var().item() == pytest.approx(0.5 / 500, rel=0.05)


def test_contrast_brightness_on_grey_images_are_the_closed_forms() -> None:
    x = _image()
    # Grey images: contrast (x - mean) c + mean with c = 0.75 (severity 1), per image.
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(S.corrupt(x, "contrast", 1), (x - mean) * 0.75 + mean, atol=1e-5)
    # Grey images: HSV value = the grey level, so brightness adds 0.3 (severity 5), clipped.
    assert torch.allclose(S.corrupt(x, "brightness", 5), (x + 0.3).clamp(0, 1), atol=1e-6)
    # Colour: hue and saturation kept, i.e. channel ratios kept and the max raised by c.
    rgb = torch.tensor([0.2, 0.4, 0.1]).reshape(1, 3, 1, 1)
    out = S.corrupt(rgb, "brightness", 1).flatten()
    assert out.tolist() == pytest.approx([0.2 * 0.45 / 0.4, 0.45, 0.1 * 0.45 / 0.4])


def test_blur_jpeg_pixelate_keep_flat_images_and_degrade_with_severity() -> None:
    flat = torch.full((1, 3, 32, 32), 0.4)
    for name in ("gaussian_blur", "pixelate"):
        assert torch.allclose(S.corrupt(flat, name, 5), flat, atol=1e-6)
    x = _image(c=3, size=32)
    for name in ("gaussian_blur", "jpeg_compression", "pixelate"):
        errs = [(S.corrupt(x, name, s) - x).abs().mean().item() for s in (1, 5)]
        assert 0 < errs[0] < errs[1], name
        out = S.corrupt(x, name, 3)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_corrupt_refuses_unknown_names_and_severities() -> None:
    with pytest.raises(ValueError, match="unknown corruption"):
        S.corrupt(_image(), "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        S.corrupt(_image(), "contrast", 6)
