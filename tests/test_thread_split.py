"""benchmarks/thread_split.py: the gains it reports are ratios of the medians it measured,
and the whole comparison runs and writes its record."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from uqbench.benchmarks import thread_split

linux = sys.platform.startswith("linux")  # where glibc's mallopt can be tuned


def test_gains_are_ratios_of_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each call of a configuration returns the next of its hand-picked per-process rates.
    per_process = {
        (2, 1, True): iter([[20.0], [22.0], [21.0]]),
        (1, 2, True): iter([[13.0, 14.0], [12.0, 13.0], [14.0, 14.0]]),
        (2, 1, False): iter([[18.0], [17.0], [19.0]]),
        (1, 2, False): iter([[11.0, 11.0], [10.0, 12.0], [12.0, 12.0]]),
    }

    def fake(threads: int, count: int, seconds: float, tuned: bool) -> list[dict]:
        rates = next(per_process[(threads, count, tuned)])
        return [{"steps_per_s": v, "threads": threads, "malloc_tuned": tuned} for v in rates]

    monkeypatch.setattr(thread_split, "_processes", fake)
    r = thread_split.compare(cores=2, seconds=1.0, repeats=3)
    assert r["steps_per_s"]["split_tuned"] == [27.0, 25.0, 28.0]  # summed over processes
    assert [order[0] for order in r["order"]] == ["one_tuned", "split_tuned", "one_untouched"]
    one, split = statistics.median([20.0, 22.0, 21.0]), statistics.median([27.0, 25.0, 28.0])
    assert r["split_gain"] == pytest.approx(split / one - 1)  # 27 / 21 - 1
    assert r["malloc_gain"]["one"] == pytest.approx(21.0 / 18.0 - 1)
    assert r["malloc_gain"]["split"] == pytest.approx(27.0 / 22.0 - 1)
    assert r["split_gain_untouched"] == pytest.approx(22.0 / 18.0 - 1)
    md = thread_split.render_md(r, "cmd")
    assert "| 2 processes, 1 thread each (sum), allocator tuned | 27.0, 25.0, 28.0 | 27.0 |" in md
    assert "+29% steps/s against one process" in md  # 27 / 21


def test_comparison_runs_and_writes_its_record(tmp_path: Path) -> None:
    """Real processes: each configuration ran with its thread count and allocator setting."""
    argv = ["--cores", "2", "--seconds", "0.05", "--repeats", "1", "--out", str(tmp_path)]
    assert thread_split.main(argv) == 0
    r = json.loads((tmp_path / "thread-split.json").read_text())
    assert all(len(v) == 1 and v[0] > 0 for v in r["steps_per_s"].values())
    assert r["processes"] == {
        "one_tuned": {"threads": [2], "malloc_tuned": [linux]},
        "split_tuned": {"threads": [1], "malloc_tuned": [linux]},
        "one_untouched": {"threads": [2], "malloc_tuned": [False]},
        "split_untouched": {"threads": [1], "malloc_tuned": [False]},
    }
    assert "allocator untouched" in (tmp_path / "thread-split.md").read_text()
