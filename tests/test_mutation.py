"""The mutation harness plants real behaviour changes, and only while its patch is active.

Each check compares a model's behaviour under a mutant's patch with what the unpatched code
gives, on tiny hand-sized cases; the full mutation run (which trains) is
``python -m uqbench.mutation`` (results/reference/mutation.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import toy_mlp

from uqbench import get_posterior, metrics
from uqbench.architectures import ModelSpec
from uqbench.mutation import MUTANTS, main

BY_NAME = {m.name: m for m in MUTANTS}


def test_at_least_twelve_mutants_each_restricted_to_some_runs():
    assert len(MUTANTS) >= 12
    assert len({m.name for m in MUTANTS}) == len(MUTANTS)
    for m in MUTANTS:
        assert m.methods and m.tasks and m.what


def test_one_sample_prediction_repeats_one_sample_and_is_undone():
    model = toy_mlp("ffg")
    x = torch.linspace(-1, 1, 5).reshape(-1, 1)
    with BY_NAME["one-sample-prediction"].patch():
        out = model.sample_outputs(x, 4)
    assert out.shape == (4, 5, 1) and torch.equal(out[0], out[3])
    out = model.sample_outputs(x, 4)
    assert not torch.equal(out[0], out[3])  # independent samples again


def test_dropout_off_at_prediction_makes_eval_deterministic_only():
    model = toy_mlp("dropout")
    x = torch.ones(3, 1)
    model.eval()
    with BY_NAME["dropout-off-at-prediction"].patch():
        assert torch.equal(model(x), model(x))
        model.train()
        draws = torch.stack([model(x) for _ in range(20)])
        assert draws.std(0).max() > 0  # still dropout in training


def test_kl_not_divided_by_n_multiplies_the_kl_term_by_n():
    model = toy_mlp("ffg")
    x, y = torch.zeros(4, 1), torch.zeros(4, 1)
    torch.manual_seed(1)
    loss, parts = model.loss(x, y)
    with BY_NAME["kl-not-divided-by-n"].patch():
        torch.manual_seed(1)
        bad, bad_parts = model.loss(x, y)
    assert torch.allclose(parts["kl"], bad_parts["kl"])
    # loss = nll + kl / N; mutant: nll + kl (N = 20)
    assert torch.allclose(bad - loss, parts["kl"] * (1 - 1 / 20))


def test_entropy_mean_of_samples_is_below_the_predictive_entropy():
    from uqbench import evaluate

    logits = torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]])  # two confident, opposite samples
    with BY_NAME["entropy-mean-of-samples"].patch():
        p = evaluate.M.predictive_probs(logits)
        h_bad = evaluate.M.entropy(p)
    h_true = metrics.entropy(p)
    assert torch.allclose(h_true, torch.tensor([torch.log(torch.tensor(2.0)).item()]).double())
    q = torch.softmax(torch.tensor([4.0, 0.0]), 0).double()
    assert torch.allclose(h_bad, -(q * q.log()).sum().reshape(1))
    assert evaluate.M is metrics


def test_fgsm_mutants_change_sign_and_clipping():
    from uqbench import evaluate
    from uqbench.attacks import fgsm

    spec = ModelSpec(arch="mlp", in_shape=(2,), out_dim=2, kind="classification", n_data=10,
                     arch_kwargs={"hidden": 4}, input_range=(0.0, 1.0))  # fmt: skip
    torch.manual_seed(0)
    model = get_posterior("l2")(spec)
    x, y = torch.full((6, 2), 0.95), torch.tensor([0, 1, 0, 1, 0, 1])
    right = fgsm(model, x, y, 0.1, 1)
    with BY_NAME["fgsm-wrong-sign"].patch():
        wrong = evaluate.fgsm_attack(model, x, y, 0.1, 1)
    with BY_NAME["fgsm-no-clip"].patch():
        unclipped = evaluate.fgsm_attack(model, x, y, 0.1, 1)
    assert right.max() <= 1.0 and unclipped.max() > 1.0
    step = (right - x).sign()
    moved = step != 0
    assert torch.equal((wrong - x).sign()[moved], -step[moved])


def test_unknown_mutant_is_one_clear_error(capsys, tmp_path):
    assert main(["--out", str(tmp_path), "--mutants", "no-such-bug"]) == 2
    assert "unknown mutant(s) no-such-bug" in capsys.readouterr().err


def test_several_reference_files_are_one_reference_with_a_named_tolerance(capsys, tmp_path):
    # As `uqbench check --reference` given again: CI checks its mutants against the mean of
    # the committed ci suite's 5 seeds.
    ref = Path(__file__).resolve().parents[1] / "results" / "reference"
    refs = ["--reference", str(ref / "ci.json")]
    for s in (1, 2, 3, 4):
        refs += ["--reference", str(ref / "repeats" / f"ci-seed{s}.json")]
    base = ["--out", str(tmp_path), "--mutants", "none", "--check-only", *refs]
    assert main(base) == 2
    assert "several files needs --tolerance" in capsys.readouterr().err
    assert main([*base, "--tolerance", str(ref / "ci-mean-tolerances.json")]) == 0


def test_notmnist_wrong_split_changes_the_subset_the_ood_registry_takes():
    import numpy as np

    from uqbench import ood

    labels = np.repeat(np.arange(10), 20)  # letters A-J, 20 files each, in letter order
    stream = "mnist/ood/notmnist"
    clean = ood.stratified_indices(labels, 10, 0, stream=stream)
    assert len(set(labels[clean])) == 10  # stratified: one file of each letter
    with BY_NAME["notmnist-wrong-split"].patch():
        idx = ood.stratified_indices(labels, 10, 0, stream=stream)
        other = ood.stratified_indices(labels, 10, 0, stream="cifar5/ood/cifar5-hidden")
    assert set(labels[idx]) == {0}  # the first 10 files: all letter A
    assert np.array_equal(
        other, ood.stratified_indices(labels, 10, 0, stream="cifar5/ood/cifar5-hidden")
    )


def test_a_rerun_with_another_seed_checks_only_that_seed(tmp_path, tiny_task):
    """Runs of an earlier seed in the same ``--out`` stay on disk (the runner keeps them)
    but are not averaged into the next seed's check."""
    from helpers import TINY_SUITE

    from uqbench.mutation import _run, _runs_made

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE.replace('["l2", "ffg"]', '["l2"]'))
    out, cache = tmp_path / "m", tmp_path / "cache"
    first = _run(str(suite), out, cache, None, ["tiny-blobs"], 0)
    second = _run(str(suite), out, cache, None, ["tiny-blobs"], 1)
    assert [r["seed"] for r in first["runs"]] == [0]
    assert [r["seed"] for r in second["runs"]] == [1]
    assert sorted(p.stem for p in (out / "tiny" / "runs").glob("*.json")) == [
        "l2-tiny-blobs-seed0",
        "l2-tiny-blobs-seed1",
    ]
    made = _runs_made(out / "tiny", ["l2"], ["tiny-blobs"], 1)
    assert [r["seed"] for r in made["runs"]] == [1]
