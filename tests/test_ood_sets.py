"""OOD sets as a registry of their own, selected per task; the plug-in task/OOD example.

The example package in ``tests/plugin_example_data`` (the README's) is installed the way
``pip install`` would leave it (a ``*.dist-info`` with its entry points) and run through
the command line on synthetic IDX files.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import struct
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_plugin_entry_point import install_fake

import uqbench
from uqbench.cli import main
from uqbench.data import DataSource, load_fashion_mnist, verify_all
from uqbench.errors import ConfigError, DataError
from uqbench.registry import OOD_SETS, TASKS
from uqbench.suites import load_suite

EXAMPLE = Path(__file__).parent / "plugin_example_data"
MODULE = "uqbench_my_digits"


@pytest.fixture
def clean_registries():
    """Restore the task and OOD-set registries (and forget the example's module)."""
    import sys

    states = [(r, r.snapshot()) for r in (TASKS, OOD_SETS)]
    yield
    for r, state in states:
        r.restore(state)
    sys.modules.pop(MODULE, None)


def test_builtin_sets_and_task_defaults() -> None:
    assert {"notmnist", "fashion-mnist", "cifar5-hidden"} <= set(uqbench.list_ood_sets())
    assert uqbench.get_task("mnist").ood_sets == ("notmnist",)
    assert uqbench.get_task("cifar5").ood_sets == ("cifar5-hidden",)
    assert uqbench.get_task("toy-cubic").ood_sets == ()


def suite_file(tmp_path: Path, task_table: str, tasks: str = '["mnist"]') -> Path:
    p = tmp_path / "s.toml"
    p.write_text(f'methods = ["l2"]\ntasks = {tasks}\nseeds = [0]\n{task_table}')
    return p


def test_suite_selects_ood_sets_per_task(tmp_path) -> None:
    p = suite_file(
        tmp_path, '[task.mnist]\nood = ["notmnist", "fashion-mnist"]\n', '["mnist", "cifar5"]'
    )
    runs = {r.task: r for r in load_suite(p).runs()}
    assert runs["mnist"].eval["ood"] == ["notmnist", "fashion-mnist"]
    assert runs["cifar5"].eval["ood"] == ["cifar5-hidden"]  # the task's default
    # OOD sets are an evaluation setting: the trained model is shared.
    plain = load_suite(suite_file(tmp_path, "")).runs()[0]
    assert plain.eval["ood"] == ["notmnist"]
    assert plain.train_hash() == runs["mnist"].train_hash()
    assert plain.run_hash() != runs["mnist"].run_hash()
    # The command line's --set wins over the suite, for that task only.
    o = {"task": {"mnist": {"ood": ["fashion-mnist"]}}}
    assert load_suite(p).runs(o)[0].eval["ood"] == ["fashion-mnist"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[task.mnist]\nood = ["nope"]\n', "unknown OOD set 'nope'; known: "),
        ('[task.mnist]\nood = "notmnist"\n', "ood: expected a list of OOD set names"),
    ],
)
def test_bad_ood_selection_is_one_clear_error(tmp_path, table, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_suite(suite_file(tmp_path, table)).runs()


def test_ood_set_of_the_wrong_shape_is_refused(clean_registries) -> None:
    class Flat(uqbench.OODSet):
        def load(self, source, *, in_shape, n, seed, stream):
            return uqbench.OODData(torch.zeros(5, 3))

    uqbench.register_ood_set("flat")(Flat)
    with pytest.raises(DataError, match=r"'flat' gives inputs of shape \[3\], but task 'mnist'"):
        uqbench.get_task("mnist")().load_with_ood(None, ood=["flat"])


def test_ood_set_smaller_than_n_ood_is_used_whole_and_the_notes_say_so(clean_registries) -> None:
    class Small(uqbench.OODSet):
        def load(self, source, *, in_shape, n, seed, stream):
            return uqbench.OODData(torch.zeros(7, *in_shape), notes=["own note"])

    uqbench.register_ood_set("small")(Small)
    task = uqbench.get_task("toy-cubic")()
    short = "OOD set 'small' has 7 inputs, fewer than the n_ood=50 asked for: all of them are used"
    data = task.load_with_ood(None, ood=["small"], n_ood=50)
    assert len(data.ood["small"]) == 7 and short in data.notes and "own note" in data.notes
    for n in (7, None):  # asked for what it has, or for everything: nothing to say
        notes = task.load_with_ood(None, ood=["small"], n_ood=n).notes
        assert not any("fewer than the n_ood" in note for note in notes), n


def write_idx(path: Path, arr: np.ndarray) -> None:
    """An IDX file written from its definition (not with uqbench's reader)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.astype(np.uint8).tobytes()))


def make_digits(root: Path) -> Path:
    folder = root / "my-digits"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 100)):
        y = np.arange(n) % 10
        x = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
        x[np.arange(n), y, :] = 255  # the class is the row that is lit: easy to learn
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return root


def test_example_declares_its_entry_points() -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    eps = meta["project"]["entry-points"]
    assert eps["uqbench.tasks"] == {"my-digits": MODULE}
    assert eps["uqbench.ood_sets"] == {"uniform-noise": MODULE}


def test_example_task_and_ood_set_run_through_entry_points(
    clean_registries, tmp_path, monkeypatch, capsys
) -> None:
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    groups = meta["project"]["entry-points"]
    text = "".join(
        f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for g, eps in groups.items()
    )
    install_fake(tmp_path, meta["project"]["name"], text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    TASKS.reset_discovery()
    OOD_SETS.reset_discovery()
    assert "my-digits" in uqbench.list_tasks() and "uniform-noise" in uqbench.list_ood_sets()

    data_dir = make_digits(tmp_path / "data")
    suite = suite_file(
        tmp_path,
        "[eval]\ntest_samples = 2\nfgsm_samples = 2\nfgsm_n = 20\n"
        "[task.my-digits]\ntrain = { epochs = 2, batch_size = 50 }\n",
        '["my-digits"]',
    )
    argv = [
        "run",
        "--suite",
        str(suite),
        "--data-dir",
        str(data_dir),
        "--no-download",
        "--out",
        str(tmp_path / "out"),
        "--quiet",
        "--no-report",
        "--n-ood",
        "300",
    ]
    # Unverified files are refused unless the user opts in (one line, no traceback).
    monkeypatch.delenv("UQBENCH_ALLOW_UNVERIFIED", raising=False)
    assert main(argv) == 2
    assert "no published checksum" in capsys.readouterr().err
    assert main([*argv, "--allow-unverified"]) == 0
    (run,) = json.loads((tmp_path / "out" / "s" / "results.json").read_text())["runs"]
    assert run["data"]["n_ood"] == {"uniform-noise": 300}
    assert run["data"]["verified"] is False and run["data"]["files"][0]["expected_md5"] is None
    ood = run["metrics"]["ood"]["uniform-noise"]  # the set's name is the metric key
    assert 0.0 <= ood["auroc"] <= 1.0 and math.isfinite(ood["median_entropy"])
    assert run["metrics"]["error_pct"] < 50  # it learnt the lit row


def test_uniform_noise_is_seeded_per_stream(clean_registries, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import uqbench_my_digits as ex

    s = ex.UniformNoise()
    a = s.load(None, in_shape=(1, 4, 4), n=50, seed=0, stream="t/ood/uniform-noise").x
    assert a.shape == (50, 1, 4, 4) and 0 <= float(a.min()) and float(a.max()) <= 1
    same = s.load(None, in_shape=(1, 4, 4), n=50, seed=0, stream="t/ood/uniform-noise").x
    other = s.load(None, in_shape=(1, 4, 4), n=50, seed=0, stream="u/ood/uniform-noise").x
    assert torch.equal(a, same) and not torch.equal(a, other)


# -- Fashion-MNIST: the real copy in $UQBENCH_DATA_DIR ------------------------------------
DATA_DIR = os.environ.get("UQBENCH_DATA_DIR", "").strip()
needs_data = pytest.mark.skipif(
    not DATA_DIR or not (Path(DATA_DIR) / "fashion-mnist").is_dir(),
    reason="UQBENCH_DATA_DIR with a fashion-mnist/ folder is not set",
)
# md5 of the decompressed upstream files (PROVENANCE-fashion-mnist.md, upstream README).
FASHION_RAW_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def fashion_source(root: Path, cache: Path, **kw) -> DataSource:
    return DataSource(root=root, download=False, cache_dir=cache, **kw)


@needs_data
def test_fashion_mnist_verifies_by_decompressed_content(tmp_path) -> None:
    raw = load_fashion_mnist(fashion_source(Path(DATA_DIR), tmp_path / "c"))
    assert raw.verified and raw.notes == []
    assert {f["file"].removesuffix(".gz"): f["md5"] for f in raw.files} == FASHION_RAW_MD5
    assert raw.arrays["train_x"].shape == (60000, 28, 28)
    assert np.bincount(raw.arrays["train_y"]).tolist() == [6000] * 10
    assert np.bincount(raw.arrays["test_y"]).tolist() == [1000] * 10
    report = verify_all(fashion_source(Path(DATA_DIR), tmp_path / "c"))["fashion-mnist"]
    assert report["status"] == "verified" and report["counts"]["test"]["Ankle boot"] == 1000
    # Another gzip packing, and no packing at all, of the same content verify too.
    for name, packing in (("regz", lambda b: gzip.compress(b, 1)), ("raw", lambda b: b)):
        folder = tmp_path / name / "fashion-mnist"
        folder.mkdir(parents=True)
        for f in raw.files:
            content = gzip.decompress(Path(f["path"]).read_bytes())
            suffix = ".gz" if name == "regz" else ""
            (folder / (f["file"].removesuffix(".gz") + suffix)).write_bytes(packing(content))
        again = load_fashion_mnist(fashion_source(tmp_path / name, tmp_path / "c"))
        assert again.verified
        assert np.array_equal(again.arrays["test_x"], raw.arrays["test_x"])
    # One changed label: refused, unless unverified data are allowed (then labelled).
    bad = tmp_path / "regz" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(bad.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    bad.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match="Fashion-MNIST: md5 mismatch"):
        load_fashion_mnist(fashion_source(tmp_path / "regz", tmp_path / "c"))
    loose = load_fashion_mnist(
        fashion_source(tmp_path / "regz", tmp_path / "c", allow_unverified=True)
    )
    assert not loose.verified and "UNVERIFIED" in loose.notes[0]


@needs_data
def test_fashion_mnist_as_an_ood_set_of_mnist(tmp_path) -> None:
    src = fashion_source(Path(DATA_DIR), tmp_path)
    data = uqbench.get_task("mnist")().load_with_ood(
        src, ood=["notmnist", "fashion-mnist"], n_train=100, n_test=50, n_ood=200, seed=0
    )
    assert list(data.ood) == ["notmnist", "fashion-mnist"]
    fm = data.ood["fashion-mnist"]
    assert fm.shape == (200, 1, 28, 28) and fm.dtype == torch.float32
    assert 0.0 <= float(fm.min()) and float(fm.max()) <= 1.0
    assert [f["dataset"] for f in data.files].count("fashion-mnist") == 4 and data.verified
    # Stratified by class: 20 of each of the 10 classes of the test images.
    raw = load_fashion_mnist(src)
    pixels = {
        bytes(im): y for im, y in zip(raw.arrays["test_x"], raw.arrays["test_y"], strict=True)
    }
    labels = [pixels[bytes((x[0] * 255).round().to(torch.uint8).numpy())] for x in fm]
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    # The labels the set hands over are those of its images, and the run records the counts.
    assert data.ood_labels["fashion-mnist"].tolist() == labels
    counts = data.class_counts()
    assert counts["ood.fashion-mnist"] == counts["ood.notmnist"] == [20] * 10
    assert sum(counts["train"]) == 100 and sum(counts["test"]) == 50
    assert counts["test"] == np.bincount(data.test.y.numpy(), minlength=10).tolist()


def test_fashion_mnist_missing_names_its_mirror(tmp_path) -> None:
    with pytest.raises(DataError) as exc:
        load_fashion_mnist(fashion_source(tmp_path / "empty", tmp_path / "c"))
    msg = str(exc.value)
    assert "Fashion-MNIST" in msg and "fashion-mnist.s3-website" in msg
    assert str(tmp_path / "c" / "fashion-mnist") in msg
