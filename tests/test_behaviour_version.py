"""The behaviour versions results are reused under stay tied to the committed ci reference.

A change that moves any metric of the ci suite fails CI's tripwire; regenerating the reference
then requires a new line in results/reference/behaviour.json: a new train version when the
training logs moved, else a new eval version, equal to the constants in uqbench.provenance. So
results made by older behaviour are never reused, and results of unchanged behaviour always are.
"""

from __future__ import annotations

import json
from pathlib import Path

from uqbench import provenance
from uqbench.provenance import EVAL_VERSION, TRAIN_VERSION, reference_digests

REF_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"


def test_the_newest_line_is_the_codes_versions_and_matches_the_ci_reference():
    history = json.loads((REF_DIR / "behaviour.json").read_text())["versions"]
    newest = history[-1]
    assert (newest["train"], newest["eval"]) == (TRAIN_VERSION, EVAL_VERSION)
    digests = reference_digests(json.loads((REF_DIR / "ci.json").read_text()))
    assert digests == {
        "train_log": newest["train_log_sha256"],
        "metrics": newest["metrics_sha256"],
    }, (
        "results/reference/ci.json changed: bump TRAIN_VERSION (training logs moved) or "
        "EVAL_VERSION (only metrics moved) and add a line to results/reference/behaviour.json"
    )


def test_each_new_line_bumps_the_version_whose_reference_moved():
    history = json.loads((REF_DIR / "behaviour.json").read_text())["versions"]
    for old, new in zip(history, history[1:], strict=False):
        trained_anew = old["train_log_sha256"] != new["train_log_sha256"]
        if trained_anew:
            assert new["train"] > old["train"], new
        else:
            assert new["train"] == old["train"] and new["eval"] > old["eval"], new
            assert old["metrics_sha256"] != new["metrics_sha256"], "a line with nothing moved"


def test_digests_see_one_changed_value_ignore_run_order_and_wall_time():
    runs = [
        {
            "method": "a",
            "task": "t",
            "seed": 0,
            "metrics": {"x": 1.0},
            "train_log": {"loss": [1.0], "seconds": 3.0},
        },
        {
            "method": "b",
            "task": "t",
            "seed": 0,
            "metrics": {"x": 2.0},
            "train_log": {"loss": [2.0], "seconds": 4.0},
        },
    ]
    base = reference_digests({"runs": runs})
    assert reference_digests({"runs": runs[::-1]}) == base
    slower = [runs[0], {**runs[1], "train_log": {"loss": [2.0], "seconds": 99.0}}]
    assert reference_digests({"runs": slower}) == base
    changed = [runs[0], {**runs[1], "metrics": {"x": 2.0000001}}]
    assert reference_digests({"runs": changed})["metrics"] != base["metrics"]
    assert reference_digests({"runs": changed})["train_log"] == base["train_log"]


def test_an_edit_that_keeps_behaviour_keeps_the_versions(monkeypatch):
    """Results are reused across refactorings; an eval bump keeps the trained models."""
    before_code, before_train = provenance.code_version(), provenance.train_version()
    before_src = provenance.source_version()
    own = provenance._own_files()
    monkeypatch.setattr(provenance, "_own_files", lambda: own[:-1])  # as if a file changed
    assert provenance.source_version() != before_src
    assert provenance.code_version() == before_code
    monkeypatch.setattr(provenance, "EVAL_VERSION", provenance.EVAL_VERSION + 1)
    assert provenance.code_version() != before_code
    assert provenance.train_version() == before_train
    monkeypatch.setattr(provenance, "TRAIN_VERSION", provenance.TRAIN_VERSION + 1)
    assert provenance.train_version() != before_train
