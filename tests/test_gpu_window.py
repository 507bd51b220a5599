"""The GPU window's script (benchmarks/gpu/paper_window.sh), rehearsed on the CPU: one packed
run of the smoke suite, merged into a results file whose run is the one asked for. A GPU window
is rare and short, so the script must not first fail there (it once imported a name that had
moved, which only its merge step would have shown)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu" / "paper_window.sh"


def test_paper_window_script_runs_packs_and_merges_on_cpu(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "SUITE": "smoke",
        "DEVICE": "cpu",
        "METHODS_TOY": "l2",
        "UQBENCH_CACHE_DIR": str(tmp_path / "cache"),
        "UQBENCH_GIT_COMMIT": "rehearsal",
    }
    out = tmp_path / "out"
    out.mkdir()
    env["OUT"] = str(out)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "0", "toy-cubic", "300", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "merged 1 runs" in proc.stdout, proc.stdout + proc.stderr
    results = json.loads((tmp_path / ".gpu-out" / "smoke" / "results.json").read_text())
    (run,) = results["runs"]
    assert (run["method"], run["task"], run["seed"], run["status"]) == ("l2", "toy-cubic", 0, "ok")
    assert "paper_window.sh" in results["command"]
    assert (out / "smoke-runs.tar.gz").stat().st_size > 0
    # Each finished run is in $OUT as soon as it ends, with its saved predictions, so a window
    # cut short before the merge still brings it back.
    names = sorted(p.name for p in (out / "runs").iterdir())
    assert names == ["l2-toy-cubic-seed0.json", "l2-toy-cubic-seed0.npz"], names
