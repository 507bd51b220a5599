"""The real data sets in ``$UQBENCH_DATA_DIR`` (CI: ../shared/data): counts, checksums,
the unreadable notMNIST files and the refusal of the unverified CIFAR-10 stand-in.

Expected values come from the published data set facts and PROVENANCE-*.md, not from
running this code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import uqbench
from uqbench.data import DataSource, load_cifar10, load_mnist, load_notmnist, verify_all
from uqbench.errors import DataError

DATA_DIR = os.environ.get("UQBENCH_DATA_DIR", "").strip()
pytestmark = pytest.mark.skipif(
    not DATA_DIR,
    reason="UQBENCH_DATA_DIR is not set (point it at a folder with mnist/, notmnist/, cifar10/, "
    "e.g. ../shared/data)",
)

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
NOTMNIST_READABLE = [1872, 1873, 1873, 1873, 1873, 1872, 1872, 1872, 1872, 1872]
NOTMNIST_UNREADABLE = [
    "A/RGVtb2NyYXRpY2FCb2xkT2xkc3R5bGUgQm9sZC50dGY=.png",
    "F/Q3Jvc3NvdmVyIEJvbGRPYmxpcXVlLnR0Zg==.png",
]
# md5 of `find . -type f | sort | xargs md5sum` in notMNIST_small/ (PROVENANCE file).
NOTMNIST_DIGEST = "c4a392fa54b9a63558fed9ccc7426ace"
CIFAR_UPSTREAM_MD5 = "c58f30108f718f92721af3b95e74349a"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A private cache, so the tests neither use nor fill the user's cache."""
    return tmp_path_factory.mktemp("uqbench-cache")


def source(cache: Path, allow_unverified: bool = False) -> DataSource:
    return DataSource(
        root=Path(DATA_DIR), download=False, allow_unverified=allow_unverified, cache_dir=cache
    )


@pytest.fixture(scope="module")
def cifar5(cache: Path):
    """CIFAR-5 with the opt-in, loaded once for the module."""
    return uqbench.get_task("cifar5")().load_with_ood(source(cache, allow_unverified=True))


def mean(x: torch.Tensor) -> float:
    return float(x.sum(dtype=torch.float64)) / x.numel()


def test_mnist_counts_and_checksums(cache: Path) -> None:
    raw = load_mnist(source(cache))
    assert raw.verified and len(raw.files) == 4 and raw.notes == []
    assert np.bincount(raw.arrays["train_y"]).tolist() == MNIST_TRAIN
    assert np.bincount(raw.arrays["test_y"]).tolist() == MNIST_TEST
    assert raw.arrays["train_x"].shape == (60000, 28, 28)
    assert raw.arrays["test_x"].shape == (10000, 28, 28)


def test_mnist_task(cache: Path) -> None:
    data = uqbench.get_task("mnist")().load_with_ood(source(cache))
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert float(data.train.x.min()) == 0.0 and float(data.train.x.max()) == 1.0
    # Pixel means /255 from the provenance notes (an independent computation).
    assert abs(mean(data.train.x) - 0.130660) < 1e-5
    assert abs(mean(data.test.x) - 0.132515) < 1e-5
    assert data.ood["notmnist"].shape == (18724, 1, 28, 28)
    assert abs(mean(data.ood["notmnist"]) - 0.425364) < 1e-5
    assert data.verified and all(f["verified"] for f in data.files)


def test_notmnist_letters_and_unreadable(cache: Path) -> None:
    raw = load_notmnist(source(cache))
    assert raw.verified and raw.files[0]["md5"] == NOTMNIST_DIGEST
    assert np.bincount(raw.arrays["y"]).tolist() == NOTMNIST_READABLE
    assert len(raw.arrays["x"]) == 18724 and raw.info["n_files"] == 18726
    assert sorted(raw.info["unreadable"]) == NOTMNIST_UNREADABLE
    assert any("2 unreadable" in n for n in raw.notes)


def test_cifar5_with_opt_in(cifar5) -> None:
    assert cifar5.train.x.shape == (25000, 3, 32, 32)
    assert cifar5.test.x.shape == (5000, 3, 32, 32)
    assert cifar5.ood["cifar5-hidden"].shape == (5000, 3, 32, 32)
    assert torch.bincount(cifar5.train.y).tolist() == [5000] * 5
    assert torch.bincount(cifar5.test.y).tolist() == [1000] * 5
    assert 0.0 <= float(cifar5.train.x.min()) and float(cifar5.train.x.max()) <= 1.0
    assert not cifar5.verified
    (rec,) = cifar5.files
    assert rec["expected_md5"] == CIFAR_UPSTREAM_MD5 and rec["md5"] != CIFAR_UPSTREAM_MD5
    assert any("UNVERIFIED" in n and "JPEG" in n for n in cifar5.notes)


def test_cifar5_subsets_record_where_their_images_lie(cifar5, cache: Path) -> None:
    """Each seed's 200-image subsets say which upstream test images they hold, so that seeds
    can be paired image by image; the positions are checked against the raw batches."""
    from uqbench.data import load_cifar10

    raw = load_cifar10(source(cache, allow_unverified=True)).arrays
    task = uqbench.get_task("cifar5")()
    subsets = {}
    for seed in (0, 1):
        data = task.load_with_ood(
            source(cache, allow_unverified=True), n_test=200, n_ood=200, seed=seed
        )
        idx, ood_idx = data.test.index.numpy(), data.ood_index["cifar5-hidden"].numpy()
        assert len(set(idx)) == 200 and len(set(ood_idx)) == 200
        assert torch.equal(data.test.x, torch.from_numpy(raw["test_x"][idx]).float() / 255)
        hidden = torch.from_numpy(raw["test_x"][ood_idx]).float() / 255
        assert torch.equal(data.ood["cifar5-hidden"], hidden)
        assert not set(idx) & set(ood_idx)  # the seen and the hidden classes' images
        subsets[seed] = set(idx)
    assert subsets[0] != subsets[1] and subsets[0] & subsets[1]
    # All of the test split: every seen-class image once, in upstream order.
    assert np.array_equal(np.sort(cifar5.test.index.numpy()), cifar5.test.index.numpy())
    assert len(cifar5.test.index) == 5000


def test_cifar_refused_without_opt_in(cache: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_cifar10(source(cache, allow_unverified=False))
    msg = str(exc.value)
    assert "md5 mismatch" in msg and "cifar-10-python.tar.gz" in msg
    assert CIFAR_UPSTREAM_MD5 in msg and "--allow-unverified" in msg


def test_verify_all(cache: Path) -> None:
    report = verify_all(source(cache))
    assert report["mnist"]["status"] == "verified"
    assert list(report["mnist"]["counts"]["train"].values()) == MNIST_TRAIN
    assert report["notmnist"]["status"] == "verified"
    assert report["notmnist"]["unreadable"] == 2
    assert report["cifar10"]["status"] == "unverified" and report["cifar10"]["error"] is None
    assert set(report["cifar10"]["counts"]["train"].values()) == {5000}
    assert set(report["cifar10"]["counts"]["test"].values()) == {1000}
