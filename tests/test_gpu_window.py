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

    # Back here, one command brings the window's runs into the results and merges them.
    def ingest(archive: Path, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT.parent / "ingest.sh"), str(archive), str(dest)],
            cwd=tmp_path,
            env={**env, "REPORT": "0", **extra},
            capture_output=True,
            text=True,
            timeout=300,
        )

    dest = tmp_path / "results" / "smoke"
    for archive in (out / "runs-so-far.tar.gz", out / "smoke-runs.tar.gz"):  # both layouts
        got = ingest(archive)
        assert got.returncode == 0, got.stdout + got.stderr
        assert "merged 1 runs" in got.stdout, got.stdout
    assert "copied 0 run(s)" in got.stdout and "1 already there" in got.stdout
    merged = json.loads((dest / "results.json").read_text())
    assert [r["method"] for r in merged["runs"]] == ["l2"] and "paper_window.sh" in merged[
        "command"
    ]
    # A different run of the same name here is not overwritten unless asked.
    mine = dest / "runs" / "l2-toy-cubic-seed0.json"
    mine.write_text(mine.read_text().replace('"status": "ok"', '"status": "ok" '))
    refused = ingest(out / "smoke-runs.tar.gz")
    assert refused.returncode == 1 and "exists with other contents" in refused.stderr
    forced = ingest(out / "smoke-runs.tar.gz", FORCE="1")
    assert forced.returncode == 0 and mine.with_suffix(".json.bak").exists()
    assert ingest(tmp_path / "missing.tar.gz").returncode == 2


STAGE = SCRIPT.parent / "stage_data.sh"


def _stage(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STAGE), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fake_data(root: Path, cifar_bytes: int) -> bytes:
    (root / "mnist").mkdir(parents=True)
    (root / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(b"labels")
    (root / "cifar10").mkdir()
    tarball = os.urandom(cifar_bytes)
    (root / "cifar10" / "cifar-10-python.tar.gz").write_bytes(tarball)
    return tarball


def _carry(src: Path, gpu: Path, part: str) -> subprocess.CompletedProcess[str]:
    """One call: the machine gets this part only (a carried folder not named again is gone)."""
    subprocess.run(["rm", "-rf", str(gpu / ".gpu-stage")], check=True)
    (gpu / ".gpu-stage").mkdir()
    subprocess.run(
        ["cp", "-r", str(src / ".gpu-stage" / part), str(gpu / ".gpu-stage")], check=True
    )
    return _stage(["unpack"], gpu)


def test_stage_data_sends_the_data_in_parts_one_per_call(tmp_path: Path) -> None:
    """A GPU call moves at most 64 MiB, the working tree included, so the data sets travel
    as one archive in parts, one per call; the machine keeps what arrived and unpacks the
    very same bytes once all are there."""
    tarball = _fake_data(tmp_path / "data", 2_500_000)
    here = tmp_path / "here"
    here.mkdir()
    packed = _stage(["pack", str(tmp_path / "data"), "mnist cifar10"], here, PART_BYTES="1048576")
    assert packed.returncode == 0, packed.stderr
    parts = sorted((p.name for p in (here / ".gpu-stage").iterdir()), key=int)
    assert parts == ["1", "2", "3"], parts
    assert all(f.stat().st_size <= 2**20 for f in (here / ".gpu-stage").glob("*/data.tar.*"))

    gpu = tmp_path / "gpu"
    gpu.mkdir()
    for i, part in enumerate(reversed(parts)):  # in any order
        out = _carry(here, gpu, part)
        assert out.returncode == 0, out.stderr
        last = i == len(parts) - 1
        assert ("ready: cifar10" in out.stdout) == last, out.stdout
        assert ("ready: mnist" in out.stdout) == last, out.stdout
        if not last:
            assert f"{len(parts) - 1 - i} of 3 parts still to carry" in out.stdout, out.stdout
    data = gpu / ".cache" / "gpu-data"
    assert (data / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == tarball
    assert (data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes() == b"labels"
    again = _stage(["unpack"], gpu)  # a later call that carries nothing
    assert again.returncode == 0 and "ready: cifar10" in again.stdout


def test_stage_data_refuses_a_damaged_part_and_an_unknown_set(tmp_path: Path) -> None:
    _fake_data(tmp_path / "data", 1_500_000)
    packed = _stage(["pack", str(tmp_path / "data")], tmp_path, PART_BYTES="1048576")
    assert packed.returncode == 2 and "notmnist not found" in packed.stderr  # no such folder
    bad = _stage(["pack", str(tmp_path / "data"), "mnist svhn"], tmp_path)
    assert bad.returncode == 2 and "unknown data set 'svhn'" in bad.stderr
    ok = _stage(["pack", str(tmp_path / "data"), "cifar10"], tmp_path, PART_BYTES="1048576")
    assert ok.returncode == 0, ok.stderr
    part = next((tmp_path / ".gpu-stage" / "2").glob("data.tar.part2-of-2"))
    part.write_bytes(part.read_bytes()[:-1] + b"!")
    out = _stage(["unpack"], tmp_path)
    assert out.returncode == 2
    assert "part2-of-2 arrived damaged" in out.stderr
    assert not (tmp_path / ".cache" / "gpu-data").exists()


def test_slim_keeps_results_here_and_out_of_the_tree_that_travels(tmp_path: Path) -> None:
    """The committed results would fill a call by themselves: `slim` leaves the files in
    place but untracked and ignored (what travels is tracked plus untracked-not-ignored
    files), so pack's parts get the room; `unslim` tracks them again, the index as before."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return out.stdout

    git("init", "-q")
    git("config", "user.email", "t@example.org")
    git("config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "quick").mkdir(parents=True)
    (tmp_path / "results" / "quick" / "results.json").write_bytes(b"r" * 3_000_000)
    git("add", ".")
    git("commit", "-q", "-m", "c")

    def travels() -> set[str]:
        listed = git("ls-files") + git("ls-files", "-o", "--exclude-standard")
        return set(listed.split())

    slim = _stage(["slim"], tmp_path)
    assert slim.returncode == 0, slim.stderr
    assert travels() == {"code.py"}
    assert (tmp_path / "results" / "quick" / "results.json").stat().st_size == 3_000_000
    assert "the tree that travels is 6 bytes" in slim.stdout
    assert _stage(["slim"], tmp_path).stdout.strip() == "already slim"
    packed = _stage(["pack", str(tmp_path / "data")], tmp_path)  # tree_bytes sees the slim tree
    assert packed.returncode == 2  # (no data here: refused, but not for the tree's size)
    assert "leaves only" not in packed.stderr

    unslim = _stage(["unslim"], tmp_path)
    assert unslim.returncode == 0, unslim.stderr
    assert travels() == {"code.py", "results/quick/results.json"}
    assert git("status", "--porcelain") == ""
    (tmp_path / "code.py").write_text("x = 2\n")
    git("add", "code.py")
    refused = _stage(["slim"], tmp_path)
    assert refused.returncode == 2 and "staged changes" in refused.stderr
