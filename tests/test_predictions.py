"""Each run saves its per-example outputs; the report's intervals and old results without them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import tiny_runner

from uqbench import metrics as M
from uqbench.report import write_report


def test_saved_outputs_reproduce_the_recorded_metrics(tmp_path, tiny_task):
    results = tiny_runner(tmp_path).run()
    run = next(r for r in results["runs"] if r["method"] == "ffg" and r["seed"] == 0)
    assert run["schema"] == "uqbench.run/6" and run["predictions"] == "ffg-tiny-blobs-seed0.npz"
    with np.load(tmp_path / "results" / "tiny" / "runs" / run["predictions"]) as z:
        o = {k: z[k] for k in z.files}
    m = run["metrics"]
    assert 100 * np.mean(o["test.pred"] != o["test.y"]) == pytest.approx(m["error_pct"])
    assert -np.mean(o["test.logp_true"]) == pytest.approx(m["nll"], rel=1e-5)
    assert np.mean(o["test.brier"]) == pytest.approx(m["brier"], rel=1e-5)
    h_in, h_ood = o["test.entropy"], o["ood.far.entropy"]
    assert M.auroc(h_in, h_ood) == pytest.approx(m["ood"]["far"]["auroc"], abs=1e-6)
    assert M.fpr95_in(h_in, h_ood) == pytest.approx(m["ood"]["far"]["fpr95_in"], abs=1e-6)
    assert o["fgsm.correct"].mean(1) == pytest.approx(m["fgsm"]["accuracy"])
    assert o["fgsm.entropy"].mean(1) == pytest.approx(m["fgsm"]["mean_entropy"], rel=1e-5)


def test_report_from_one_seed_with_and_without_saved_outputs(tmp_path, tiny_task):
    results = tiny_runner(tmp_path).run()
    out = tmp_path / "results" / "tiny"
    one = {**results, "runs": [r for r in results["runs"] if r["seed"] == 0]}
    write_report(one, out)
    md = (out / "report.md").read_text()
    assert "bootstrap interval over test examples" in md and "ONE SEED" not in md
    # Old results: schema 1, no saved outputs, one seed -> a report with a clear note.
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for p in (old / "runs").glob("*.npz"):
        p.unlink()
    legacy = json.loads(json.dumps(one))
    legacy["schema"] = "uqbench.results/1"
    for r in legacy["runs"]:
        r.pop("predictions")
    write_report(legacy, old)
    md = (old / "report.md").read_text()
    assert "ONE SEED and no saved per-example outputs" in md
    assert "[agrees]" not in md and "[differs]" not in md
