"""Shift and selective-prediction metrics of evaluate_classification on a hand-made model."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import MeanBrightness, StubTask, grey_levels_data

from uqbench import metrics as M
from uqbench.data.subset import stratified_subset
from uqbench.errors import ConfigError
from uqbench.evaluate import evaluate_classification
from uqbench.suites import parse_suite


def test_new_metrics_match_direct_computation() -> None:
    data, model = grey_levels_data(), MeanBrightness()
    shift = {"n": 40, "rotations": [0, 90], "corruptions": ["contrast"], "severities": [1, 5]}
    res = evaluate_classification(
        model, StubTask(), data, test_samples=2, fgsm=False, fgsm_samples=1, fgsm_n=None,
        progress=False, shift=shift,
    )  # fmt: skip
    logits = model.sample_outputs(data.test.x, 2)
    probs = M.predictive_probs(logits)
    assert res["aurc"] == pytest.approx(M.aurc(probs, data.test.y), abs=1e-6)
    d = M.entropy_decomposition(logits)
    assert res["test_mutual_info_mean"] == pytest.approx(d["mutual_info"].mean().item(), abs=1e-6)
    # The grey OOD images sit on the boundary: both samples are confident and opposite, so
    # their MI is far above the test set's, and the MI score separates perfectly.
    assert res["ood"]["grey"]["auroc_mutual_info"] == pytest.approx(1.0)
    assert res["ood"]["grey"]["aupr_out"] == pytest.approx(1.0)
    # A flat square image rotated by 0 or 90 degrees is unchanged, so both angles give the
    # plain accuracy and NLL of the seeded subset.
    rot = res["shift_rotation"]
    assert rot["angle"] == [0.0, 90.0] and res["shift_n"] == 40
    idx = stratified_subset(data.test.y, 40, 0)
    sub_logp = M.predictive_log_probs(model.sample_outputs(data.test.x[idx], 2))
    plain = 1 - M.error_pct(sub_logp.exp(), data.test.y[idx]) / 100
    assert rot["accuracy"] == pytest.approx([plain, plain])
    assert rot["nll"][1] == pytest.approx(M.nll(sub_logp, data.test.y[idx]), abs=1e-5)
    corr = res["shift_corruption"]
    assert corr["severity"] == [1, 5]
    assert corr["mean"]["accuracy"] == corr["corruptions"]["contrast"]["accuracy"]
    # Contrast pulls every image towards its own (flat) mean: flat images are unchanged.
    assert corr["corruptions"]["contrast"]["accuracy"] == [rot["accuracy"][0]] * 2
    assert res["corrupted_accuracy_mean"] == pytest.approx(rot["accuracy"][0])


def test_without_shift_settings_there_are_no_shift_keys() -> None:
    res = evaluate_classification(
        MeanBrightness(), StubTask(), grey_levels_data(), test_samples=2, fgsm=False,
        fgsm_samples=1, fgsm_n=None, progress=False,
    )  # fmt: skip
    assert not any(k.startswith(("shift", "rotated", "corrupted")) for k in res)


@pytest.mark.parametrize(
    ("ev", "msg"),
    [
        ({"corruptions": ["fog"]}, "corruption names"),
        ({"severities": [0]}, "severities in"),
        ({"rotations": ["ninety"]}, "angles"),
        ({"rotations": 90}, "must be list"),
    ],
)
def test_suite_refuses_bad_shift_settings(ev: dict, msg: str) -> None:
    raw = {"methods": ["l2"], "tasks": ["mnist"], "seeds": [0], "eval": ev}
    with pytest.raises(ConfigError, match=msg):
        parse_suite(raw, Path("s.toml"))


def test_shift_is_evaluated_only_on_image_tasks(tmp_path, tiny_task) -> None:
    """The suite-wide shift settings (the smoke and quick suites have them) leave a task
    whose inputs are not images untouched (corrupting 2-D points would crash or clamp them
    to [0, 1]); a shift asked for such a task itself is refused."""
    from helpers import TINY_SUITE, tiny_runner

    from uqbench.registry import TASKS

    suite = TINY_SUITE.replace('["l2", "ffg"]', '["l2"]').replace("[0, 1]", "[0]")
    suite += 'shift_n = 20\ncorruptions = ["shot_noise", "jpeg_compression"]\nrotations = [90]\n'
    assert not TASKS.get(tiny_task).takes_shift()
    assert TASKS.get("mnist").takes_shift() and TASKS.get("cifar5").takes_shift()
    assert not TASKS.get("toy-cubic").takes_shift()
    (record,) = tiny_runner(tmp_path, suite).run()["runs"]
    assert record["status"] == "ok"
    assert "shift_corruption" not in record["metrics"] and "shift_rotation" not in record["metrics"]
    own = suite + '[task.tiny-blobs]\neval = { corruptions = ["contrast"] }\n'
    with pytest.raises(ConfigError) as err:
        tiny_runner(tmp_path / "own", own)
    assert str(err.value) == (
        "task 'tiny-blobs': dataset shift (rotations, corruptions) needs images [C, H, W] "
        "with pixels in [0, 1] to classify; its inputs are [2] in [-10.0, 10.0] "
        "(classification)"
    )
