"""The behaviour version results are reused under stays tied to the committed ci reference.

A change that moves any metric of the ci suite fails CI's tripwire; regenerating the reference
then requires a new line in results/reference/behaviour.json, whose version must be the one
in uqbench.provenance: so results made by older behaviour are never reused.
"""

from __future__ import annotations

import json
from pathlib import Path

from uqbench.provenance import BEHAVIOUR_VERSION, metrics_digest

REF_DIR = Path(__file__).resolve().parents[1] / "results" / "reference"


def test_the_newest_behaviour_version_is_the_codes_and_matches_the_ci_reference():
    history = json.loads((REF_DIR / "behaviour.json").read_text())["versions"]
    versions = [h["version"] for h in history]
    assert versions == sorted(set(versions)), "versions must increase, one line each"
    digests = [h["ci_metrics_sha256"] for h in history]
    assert len(set(digests)) == len(digests), "a new version needs a changed reference"
    assert history[-1]["version"] == BEHAVIOUR_VERSION
    reference = json.loads((REF_DIR / "ci.json").read_text())
    assert metrics_digest(reference) == history[-1]["ci_metrics_sha256"], (
        "results/reference/ci.json changed: bump BEHAVIOUR_VERSION and add a line to "
        "results/reference/behaviour.json"
    )


def test_the_metrics_digest_sees_one_changed_value_and_ignores_run_order():
    runs = [
        {"method": "a", "task": "t", "seed": 0, "metrics": {"x": 1.0}},
        {"method": "b", "task": "t", "seed": 0, "metrics": {"x": 2.0}},
    ]
    base = metrics_digest({"runs": runs})
    assert metrics_digest({"runs": runs[::-1]}) == base
    changed = [runs[0], {**runs[1], "metrics": {"x": 2.0000001}}]
    assert metrics_digest({"runs": changed}) != base
