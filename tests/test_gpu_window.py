"""The GPU window's script (benchmarks/gpu/paper_window.sh), rehearsed on the CPU: one packed
run of the smoke suite, merged into a results file whose run is the one asked for. A GPU window
is rare and short, so the script must not first fail there (it once imported a name that had
moved, which only its merge step would have shown)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
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
    # The finished runs, with their saved predictions, are also in one snapshot that a call cut
    # short before the merge still brings back.
    with tarfile.open(out / "runs-so-far.tar.gz") as tf:
        names = sorted(Path(n).name for n in tf.getnames() if "/runs/" in n)
    assert names == ["l2-toy-cubic-seed0.json", "l2-toy-cubic-seed0.npz"], names


STAGE = SCRIPT.parent / "stage_data.sh"


def _stage(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STAGE), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_stage_data_reassembles_cifar_from_one_part_per_call(tmp_path: Path) -> None:
    """A GPU call carries at most 64 MiB, so the CIFAR-10 tarball travels in parts, one per
    call; the machine keeps what arrived and rebuilds the very same bytes once all are there."""
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"labels")
    (data / "cifar10").mkdir()
    tarball = os.urandom(2_500_000)  # 3 parts of 1 MiB
    (data / "cifar10" / "cifar-10-python.tar.gz").write_bytes(tarball)
    here = tmp_path / "here"
    here.mkdir()
    packed = _stage(["pack", str(data), "1"], here)
    assert packed.returncode == 0, packed.stderr
    parts = sorted(p.name for p in (here / ".gpu-cifar").iterdir())
    assert parts == ["1", "2", "3"]

    gpu = tmp_path / "gpu"  # the GPU machine: each call brings only what it carries
    gpu.mkdir()
    for i, part in enumerate(parts):
        for carried in (".gpu-cifar", ".gpu-data"):
            subprocess.run(["rm", "-rf", str(gpu / carried)], check=True)
        (gpu / ".gpu-cifar").mkdir()
        subprocess.run(
            ["cp", "-r", str(here / ".gpu-cifar" / part), str(gpu / ".gpu-cifar")], check=True
        )
        if i == 0:
            subprocess.run(["cp", "-r", str(here / ".gpu-data"), str(gpu)], check=True)
        out = _stage(["unpack"], gpu)
        assert out.returncode == 0, out.stderr
        assert "ready: mnist" in out.stdout  # carried once, kept since
        ready = "ready: cifar10" in out.stdout
        assert ready == (i == len(parts) - 1), out.stdout
    rebuilt = gpu / ".cache" / "gpu-data" / "cifar10" / "cifar-10-python.tar.gz"
    assert rebuilt.read_bytes() == tarball


def test_stage_data_refuses_a_damaged_part(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "cifar10").mkdir(parents=True)
    (data / "cifar10" / "cifar-10-python.tar.gz").write_bytes(os.urandom(1_500_000))
    assert _stage(["pack", str(data), "1"], tmp_path).returncode == 0
    part = next((tmp_path / ".gpu-cifar" / "2").glob("*.part2-of-2"))
    part.write_bytes(part.read_bytes()[:-1] + b"!")
    out = _stage(["unpack"], tmp_path)
    assert out.returncode == 2
    assert "part2-of-2 arrived damaged" in out.stderr
    assert not (tmp_path / ".cache" / "gpu-data" / "cifar10").exists()
