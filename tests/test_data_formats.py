"""File formats, checksums, lookup and error messages of the data layer, on tiny
synthetic files that these tests write themselves (IDX, PNG tarballs, CIFAR pickles)."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import smoke_argv
from PIL import Image

from uqbench.data import (
    DataSource,
    format_verify_table,
    load_cifar10,
    load_mnist,
    load_notmnist,
    verify_all,
)
from uqbench.data import checksums as ck
from uqbench.data import source as source_mod
from uqbench.errors import DataError

LETTERS = "ABCDEFGHIJ"
MNIST_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- writers (independent of the package) ---------------------------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX: two zero bytes, dtype code 0x08 (uint8), ndim, big-endian dims, raw data."""
    head = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def make_mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train_y": np.arange(30, dtype=np.uint8) % 10,
        "test_x": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "test_y": (np.arange(20, dtype=np.uint8) * 3) % 10,
    }


def write_mnist(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, stem in MNIST_NAMES.items():
        data = idx_bytes(arrays[key])
        if gz:
            p = folder / f"{stem}.gz"
            p.write_bytes(gzip.compress(data))
        else:
            p = folder / stem
            p.write_bytes(data)
        paths[key] = p
    return paths


def png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def make_notmnist_files(seed: int = 0) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """Two PNGs per letter plus one 0-byte PNG in C; returns (files, decodable images)."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    images: dict[str, np.ndarray] = {}
    for letter in LETTERS:
        for k in range(2):
            img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            name = f"{letter}/font{k}{letter}.png"
            files[name] = png_bytes(img)
            images[name] = img
    files["C/empty.png"] = b""
    return files, images


def write_tar(
    path: Path, members: dict[str, bytes], *, reverse: bool = False, mtime: int = 0
) -> None:
    """A gzipped tar; ``reverse``/``mtime`` vary the packing but not the contents."""
    names = sorted(members, reverse=reverse)
    with tarfile.open(path, "w:gz") as tf:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mtime = mtime
            tf.addfile(info, io.BytesIO(members[name]))


def write_notmnist(folder: Path, files: dict[str, bytes], **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    members = {f"notMNIST_small/{n}": b for n, b in files.items()}
    members["notMNIST_small/.DS_Store"] = b"junk"  # not a letter PNG: ignored
    path = folder / "notMNIST_small.tar.gz"
    write_tar(path, members, **kw)
    return path


def expected_digest(files: dict[str, bytes]) -> str:
    """What ``find . -type f | sort | xargs md5sum | md5sum`` gives inside notMNIST_small/."""
    text = "".join(f"{md5(files[n])}  ./{n}\n" for n in sorted(files))
    return md5(text.encode())


def make_cifar(seed: int = 0, per_batch: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """HWC uint8 images and labels for 5 train batches and the test batch."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        y = rng.permutation(np.arange(per_batch) % 10)
        out[name] = (x, y)
    return out


CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_NAMES += ["dog", "frog", "horse", "ship", "truck"]


def cifar_members(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, bytes]:
    """Pickled batches: rows are R (1024), G (1024), B (1024), each row-major."""
    members = {}
    for i, (name, (x, y)) in enumerate(batches.items()):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
        # Bytes keys as the Python-2 originals for the train batches, str keys for the test.
        keys = (b"data", b"labels") if i < 5 else ("data", "labels")
        batch = {keys[0]: rows, keys[1]: [int(v) for v in y]}
        members[name] = pickle.dumps(batch, protocol=2)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_vis": 3072}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    return members


def write_cifar_tar(folder: Path, members: dict[str, bytes], **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-python.tar.gz"
    write_tar(path, {f"cifar-10-batches-py/{n}": b for n, b in members.items()}, **kw)
    return path


def src(root: Path, tmp_path: Path, **kw) -> DataSource:
    kw.setdefault("download", False)
    kw.setdefault("allow_unverified", False)
    return DataSource(root=root, cache_dir=tmp_path / "cache", **kw)


# -- MNIST -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout,gz", [("mnist", True), ("MNIST/raw", False), (".", True)])
def test_mnist_idx_parsed(tmp_path: Path, layout: str, gz: bool) -> None:
    arrays = make_mnist_arrays()
    paths = write_mnist(tmp_path / "data" / layout, arrays, gz=gz)
    raw = load_mnist(src(tmp_path / "data", tmp_path, allow_unverified=True))
    for key, arr in arrays.items():
        np.testing.assert_array_equal(raw.arrays[key], arr)
    assert raw.arrays["train_y"].dtype == np.int64
    assert [f["md5"] for f in raw.files] == [md5(paths[k].read_bytes()) for k in MNIST_NAMES]
    assert not raw.verified and all(not f["verified"] for f in raw.files)
    assert any("UNVERIFIED" in n for n in raw.notes)


def test_mnist_verifies_against_published_md5(tmp_path: Path, monkeypatch) -> None:
    paths = write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays())
    for key, stem in MNIST_NAMES.items():
        monkeypatch.setitem(ck.MNIST_MD5_GZ, stem, md5(paths[key].read_bytes()))
    raw = load_mnist(src(tmp_path / "data", tmp_path))
    assert raw.verified and raw.notes == []
    assert all(f["expected_md5"] == f["md5"] for f in raw.files)


def test_mnist_wrong_checksum_refused(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays())
    with pytest.raises(DataError) as exc:
        load_mnist(src(tmp_path / "data", tmp_path))
    msg = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in msg and "md5 mismatch" in msg
    assert md5(paths["train_x"].read_bytes()) in msg
    assert ck.MNIST_MD5_GZ["train-images-idx3-ubyte"] in msg
    assert "--allow-unverified" in msg and "UQBENCH_ALLOW_UNVERIFIED=1" in msg


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_truncated_file_named(tmp_path: Path, gz: bool) -> None:
    paths = write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays(), gz=gz)
    data = paths["test_x"].read_bytes()
    paths["test_x"].write_bytes(data[: len(data) // 2])
    for allow in (True, False):
        with pytest.raises(DataError) as exc:
            load_mnist(src(tmp_path / "data", tmp_path, allow_unverified=allow))
        assert paths["test_x"].name in str(exc.value)
        assert "truncated or corrupt" in str(exc.value)


def test_mnist_not_an_idx_file(tmp_path: Path) -> None:
    paths = write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays())
    paths["train_y"].write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: not an IDX file"):
        load_mnist(src(tmp_path / "data", tmp_path, allow_unverified=True))


# -- notMNIST --------------------------------------------------------------------------
def test_notmnist_png_tarball(tmp_path: Path) -> None:
    files, images = make_notmnist_files()
    write_notmnist(tmp_path / "data" / "notmnist", files)
    raw = load_notmnist(src(tmp_path / "data", tmp_path, allow_unverified=True))
    names = sorted(images)
    assert raw.arrays["x"].shape == (20, 28, 28) and raw.arrays["x"].dtype == np.uint8
    np.testing.assert_array_equal(raw.arrays["x"], np.stack([images[n] for n in names]))
    np.testing.assert_array_equal(raw.arrays["y"], [LETTERS.index(n[0]) for n in names])
    assert list(raw.info["unreadable"]) == ["C/empty.png"]
    assert raw.files[0]["md5"] == expected_digest(files)  # the 0-byte file counts too
    assert not raw.verified
    assert any("1 unreadable" in n and "C/empty.png" in n for n in raw.notes)


def test_notmnist_digest_ignores_packing_not_names(tmp_path: Path, monkeypatch) -> None:
    files, _ = make_notmnist_files()
    a = write_notmnist(tmp_path / "a" / "notmnist", files)
    b = write_notmnist(tmp_path / "b" / "notmnist", files, reverse=True, mtime=1234567)
    assert a.read_bytes() != b.read_bytes()
    # An extracted folder holds the same files.
    folder = tmp_path / "c" / "notmnist" / "notMNIST_small"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    monkeypatch.setattr(ck, "NOTMNIST_DIGEST", expected_digest(files))
    loaded = [load_notmnist(src(tmp_path / r, tmp_path / r)) for r in "abc"]
    for raw in loaded:
        assert raw.verified and raw.files[0]["md5"] == expected_digest(files)
        np.testing.assert_array_equal(raw.arrays["x"], loaded[0].arrays["x"])
    # Moving a file to another letter (a wrong label) changes the digest.
    moved = dict(files)
    moved["B/font0A.png"] = moved.pop("A/font0A.png")
    write_notmnist(tmp_path / "d" / "notmnist", moved)
    with pytest.raises(DataError, match="md5 mismatch"):
        load_notmnist(src(tmp_path / "d", tmp_path / "d"))


def test_notmnist_decoded_cache_is_not_trusted_blindly(tmp_path: Path) -> None:
    files, images = make_notmnist_files()
    write_notmnist(tmp_path / "data" / "notmnist", files)
    s = src(tmp_path / "data", tmp_path, allow_unverified=True)
    first = load_notmnist(s)
    cached = list((tmp_path / "cache" / "decoded").glob("notmnist-*.npz"))
    assert len(cached) == 1
    second = load_notmnist(s)
    np.testing.assert_array_equal(second.arrays["x"], first.arrays["x"])
    cached[0].write_bytes(b"garbage")
    third = load_notmnist(s)
    np.testing.assert_array_equal(third.arrays["x"], first.arrays["x"])


def test_notmnist_truncated_archive(tmp_path: Path) -> None:
    files, _ = make_notmnist_files()
    path = write_notmnist(tmp_path / "data" / "notmnist", files)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="notMNIST_small.tar.gz: truncated or corrupt"):
        load_notmnist(src(tmp_path / "data", tmp_path, allow_unverified=True))


# -- CIFAR-10 --------------------------------------------------------------------------
def test_cifar_tarball_parsed(tmp_path: Path) -> None:
    batches = make_cifar()
    path = write_cifar_tar(tmp_path / "data" / "cifar10", cifar_members(batches))
    raw = load_cifar10(src(tmp_path / "data", tmp_path, allow_unverified=True))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    want_x = np.concatenate([x for x, _ in train]).transpose(0, 3, 1, 2)  # NHWC -> NCHW
    np.testing.assert_array_equal(raw.arrays["train_x"], want_x)
    np.testing.assert_array_equal(raw.arrays["train_y"], np.concatenate([y for _, y in train]))
    np.testing.assert_array_equal(
        raw.arrays["test_x"], batches["test_batch"][0].transpose(0, 3, 1, 2)
    )
    np.testing.assert_array_equal(raw.arrays["test_y"], batches["test_batch"][1])
    assert raw.info["label_names"] == CIFAR_NAMES
    assert raw.files == [
        {
            "dataset": "cifar10",
            "file": "cifar-10-python.tar.gz",
            "path": str(path),
            "md5": md5(path.read_bytes()),
            "expected_md5": ck.CIFAR_TARBALL_MD5,
            "verified": False,
        }
    ]
    assert any("UNVERIFIED" in n for n in raw.notes)


def test_cifar_refused_by_default(tmp_path: Path) -> None:
    path = write_cifar_tar(tmp_path / "data" / "cifar10", cifar_members(make_cifar()))
    with pytest.raises(DataError) as exc:
        load_cifar10(src(tmp_path / "data", tmp_path))
    msg = str(exc.value)
    assert "md5 mismatch" in msg and str(path) in msg
    assert md5(path.read_bytes()) in msg and ck.CIFAR_TARBALL_MD5 in msg
    assert "--allow-unverified" in msg and "UQBENCH_ALLOW_UNVERIFIED=1" in msg


def test_cifar_extracted_folder_and_repacked_tarball_verify_by_members(
    tmp_path: Path, monkeypatch
) -> None:
    members = cifar_members(make_cifar())
    for name, data in members.items():
        monkeypatch.setitem(ck.CIFAR_MEMBER_MD5, name, md5(data))
    folder = tmp_path / "a" / "cifar-10-batches-py"  # torchvision's layout
    folder.mkdir(parents=True)
    for name, data in members.items():
        (folder / name).write_bytes(data)
    raw = load_cifar10(src(tmp_path / "a", tmp_path))
    assert raw.verified
    assert [f["file"] for f in raw.files] == [f"data_batch_{i}" for i in range(1, 6)] + [
        "test_batch",
        "batches.meta",
    ]
    assert all(f["path"] == str(folder / f["file"]) for f in raw.files)
    write_cifar_tar(tmp_path / "b" / "cifar10", members)  # tarball md5 is not upstream's
    repacked = load_cifar10(src(tmp_path / "b", tmp_path))
    assert repacked.verified
    np.testing.assert_array_equal(repacked.arrays["train_x"], raw.arrays["train_x"])


def test_cifar_corrupt_member_named(tmp_path: Path) -> None:
    members = cifar_members(make_cifar())
    members["data_batch_3"] = members["data_batch_3"][:100]
    write_cifar_tar(tmp_path / "data" / "cifar10", members)
    with pytest.raises(DataError, match="data_batch_3: truncated or corrupt CIFAR pickle"):
        load_cifar10(src(tmp_path / "data", tmp_path, allow_unverified=True))


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    members = cifar_members(make_cifar())
    members["test_batch"] = pickle.dumps({"data": Evil()}, protocol=2)
    write_cifar_tar(tmp_path / "data" / "cifar10", members)
    with pytest.raises(DataError, match=r"test_batch: .*unexpected object .*print"):
        load_cifar10(src(tmp_path / "data", tmp_path, allow_unverified=True))


def test_cifar_truncated_tarball_named(tmp_path: Path) -> None:
    path = write_cifar_tar(tmp_path / "data" / "cifar10", cifar_members(make_cifar()))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz: truncated or corrupt"):
        load_cifar10(src(tmp_path / "data", tmp_path, allow_unverified=True))


# -- lookup, downloads, DataSource -----------------------------------------------------
def test_missing_without_download_is_one_clear_error(tmp_path: Path) -> None:
    s = src(tmp_path / "nowhere", tmp_path)
    for loader, fname, sub in [
        (load_mnist, "train-images-idx3-ubyte.gz", "mnist"),
        (load_notmnist, "notMNIST_small.tar.gz", "notmnist"),
        (load_cifar10, "cifar-10-python.tar.gz", "cifar10"),
    ]:
        with pytest.raises(DataError) as exc:
            loader(s)
        msg = str(exc.value)
        assert fname in msg and "not found" in msg and "Downloading is disabled" in msg
        assert str(tmp_path / "nowhere" / sub) in msg and str(tmp_path / "cache" / sub) in msg
        assert "--data-dir" in msg and "UQBENCH_DATA_DIR" in msg


def test_failed_download_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    url = (tmp_path / "mirror" / "cifar-10-python.tar.gz").as_uri()  # does not exist
    monkeypatch.setitem(source_mod.URLS, "cifar-10-python.tar.gz", [url])
    with pytest.raises(DataError) as exc:
        load_cifar10(src(tmp_path / "nowhere", tmp_path, download=True))
    msg = str(exc.value)
    assert "cifar-10-python.tar.gz" in msg and "Download failed" in msg and url in msg
    assert str(tmp_path / "nowhere" / "cifar10") in msg
    assert not (tmp_path / "cache" / "cifar10" / "cifar-10-python.tar.gz").exists()


def test_download_into_cache(tmp_path: Path, monkeypatch) -> None:
    arrays = make_mnist_arrays()
    paths = write_mnist(tmp_path / "mirror", arrays)
    for key, stem in MNIST_NAMES.items():
        monkeypatch.setitem(source_mod.URLS, f"{stem}.gz", [paths[key].as_uri()])
        monkeypatch.setitem(ck.MNIST_MD5_GZ, stem, md5(paths[key].read_bytes()))
    raw = load_mnist(src(tmp_path / "nowhere", tmp_path, download=True))
    assert raw.verified
    np.testing.assert_array_equal(raw.arrays["test_x"], arrays["test_x"])
    assert (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").is_file()


def test_download_with_wrong_md5_is_discarded(tmp_path: Path, monkeypatch) -> None:
    paths = write_mnist(tmp_path / "mirror", make_mnist_arrays())
    for key, stem in MNIST_NAMES.items():
        monkeypatch.setitem(source_mod.URLS, f"{stem}.gz", [paths[key].as_uri()])
    with pytest.raises(DataError, match="downloaded file has md5"):
        load_mnist(src(tmp_path / "nowhere", tmp_path, download=True))
    assert not list((tmp_path / "cache" / "mnist").glob("*"))


def test_resolve_lookup_order(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("UQBENCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("UQBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("UQBENCH_ALLOW_UNVERIFIED", raising=False)
    s = DataSource.resolve()
    assert s.root is None and s.base_dirs() == [tmp_path / "xdg" / "uqbench" / "data"]
    assert s.download and not s.allow_unverified
    monkeypatch.setenv("UQBENCH_DATA_DIR", str(tmp_path / "env"))
    assert DataSource.resolve().root == tmp_path / "env"
    s = DataSource.resolve(data_dir=tmp_path / "arg", download=False)
    assert s.root == tmp_path / "arg" and not s.download
    assert s.base_dirs() == [tmp_path / "arg", tmp_path / "xdg" / "uqbench" / "data"]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert DataSource.resolve().cache == tmp_path / "home" / ".cache" / "uqbench" / "data"
    monkeypatch.setenv("UQBENCH_CACHE_DIR", str(tmp_path / "uqcache"))
    assert DataSource.resolve().cache == tmp_path / "uqcache" / "data"


@pytest.mark.parametrize("value,want", [("1", True), ("TRUE", True), ("yes", True), ("0", False)])
def test_resolve_allow_unverified_env(monkeypatch, value: str, want: bool) -> None:
    monkeypatch.setenv("UQBENCH_ALLOW_UNVERIFIED", value)
    assert DataSource.resolve().allow_unverified is want
    assert DataSource.resolve(allow_unverified=False).allow_unverified is False
    assert DataSource.resolve(allow_unverified=True).allow_unverified is True


def test_verify_all_reports_without_raising(tmp_path: Path, monkeypatch) -> None:
    write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays())
    files, _ = make_notmnist_files()
    path = write_notmnist(tmp_path / "data" / "notmnist", files)
    path.write_bytes(path.read_bytes()[:50])  # corrupt
    fetched: list[str] = []
    monkeypatch.setattr(
        "uqbench.data.datasets.download_file", lambda name, *a, **k: fetched.append(name)
    )
    report = verify_all(src(tmp_path / "data", tmp_path, download=True))
    m, n, c = report["mnist"], report["notmnist"], report["cifar10"]
    assert m["status"] == "unverified" and m["found"] == str(tmp_path / "data" / "mnist")
    assert m["counts"]["train"] == {str(d): 3 for d in range(10)}
    assert m["counts"]["test"] == {str(d): 2 for d in range(10)}
    assert len(m["files"]) == 4 and m["error"] is None
    assert n["status"] == "corrupt" and "notMNIST_small.tar.gz" in n["error"]
    assert c["status"] == "missing" and c["found"] is None and "not found" in c["error"]
    assert str(tmp_path / "data" / "cifar10") in c["searched"]
    table = format_verify_table(report)
    for word in ("mnist", "notmnist", "cifar10", "UNVERIFIED", "CORRUPT", "MISSING"):
        assert word in table
    # a missing set is only reported (download=True above): nothing was fetched, and the
    # table says so and how to get it
    assert fetched == [] and "verify never downloads" in table


# -- issue 13: wrong labels file, verify's exit status, unreadable folders -----------
def test_wrong_labels_file_names_the_labels_file(tmp_path: Path) -> None:
    arrays = make_mnist_arrays()
    arrays["train_y"] = arrays["test_y"]  # the test labels (20) where the train labels go (30)
    write_mnist(tmp_path / "data" / "mnist", arrays)
    with pytest.raises(DataError) as exc:
        load_mnist(src(tmp_path / "data", tmp_path, allow_unverified=True))
    msg = str(exc.value)
    assert "labels file" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "30 images" in msg and "20 labels" in msg


def _verify_cli(tmp_path: Path, *extra: str) -> int:
    from uqbench.cli import main

    return main(["data", "verify", "--data-dir", str(tmp_path / "data"), "--no-download", *extra])


def test_data_verify_exits_nonzero_on_corrupt_data(tmp_path: Path, capsys) -> None:
    paths = write_mnist(tmp_path / "data" / "mnist", make_mnist_arrays())
    paths["train_x"].write_bytes(paths["train_x"].read_bytes()[:50])  # truncated
    assert _verify_cli(tmp_path, "--allow-unverified") == 1
    got = capsys.readouterr()
    assert "CORRUPT" in got.out
    assert got.err.startswith("uqbench: data verify: exit 1: mnist corrupt (unreadable)")


def test_data_verify_exit_status_follows_what_run_would_accept(tmp_path: Path, monkeypatch, capsys):
    from uqbench.data import verify as verify_mod

    def fake(source):
        return {name: {"status": "unverified"} for name in ("mnist", "notmnist", "cifar10")}

    monkeypatch.setattr(verify_mod, "verify_all", fake)
    monkeypatch.setattr("uqbench.data.verify_all", fake)
    monkeypatch.setattr("uqbench.data.format_verify_table", lambda r: "table")
    monkeypatch.delenv("UQBENCH_ALLOW_UNVERIFIED", raising=False)
    assert _verify_cli(tmp_path) == 1  # run would refuse unverified data
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "uqbench: data verify: exit 1: "
        + "; ".join(
            f"{name} unverified (checksum mismatch, refused by `uqbench run` without "
            "--allow-unverified or UQBENCH_ALLOW_UNVERIFIED=1)"
            for name in ("mnist", "notmnist", "cifar10")
        )
    ]
    assert _verify_cli(tmp_path, "--allow-unverified") == 0
    assert capsys.readouterr().err == ""  # no closing line when nothing is refused


def test_unreadable_data_folder_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from uqbench.cli import main

    def denied(self, *a, **kw):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "is_file", denied)
    monkeypatch.setattr(Path, "is_dir", denied)
    data = ["--data-dir", str(tmp_path / "locked"), "--no-download"]
    code = main(smoke_argv("mnist", *data, "--out", str(tmp_path / "r")))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "Permission denied" in err


def test_an_incomplete_cifar_folder_names_its_missing_batches(tmp_path: Path) -> None:
    """An extraction that lost some batches: the error names them, not the tarball the user
    never had (with downloads off; with them on, the tarball is fetched as usual)."""
    members = cifar_members(make_cifar())
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, data in members.items():
        if name not in ("data_batch_3", "test_batch"):
            (folder / name).write_bytes(data)
    with pytest.raises(DataError) as err:
        load_cifar10(src(tmp_path / "data", tmp_path, allow_unverified=True))
    assert str(err.value) == (
        f"{folder}: incomplete CIFAR-10 data, missing data_batch_3, test_batch"
    )


def test_a_png_declaring_a_huge_size_is_unreadable_not_a_crash() -> None:
    from uqbench.data.formats import decode_pngs

    buf = io.BytesIO()
    Image.new("L", (28, 28)).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width and height, and its CRC:
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    images, ok, bad = decode_pngs({"A/bomb.png": bytes(png)})
    assert ok == [] and bad == {
        "A/bomb.png": "unreadable PNG (declares a size too large to decode)"
    }
