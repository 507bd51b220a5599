"""Find, verify and decode MNIST, notMNIST_small and CIFAR-10 into uint8 arrays.

Each ``load_*`` function returns a :class:`RawData`: the decoded arrays plus one record
per data file (``{"dataset", "file", "path", "md5", "expected_md5", "verified"}``).
With ``check=True`` (what tasks use) a file whose checksum does not match its published
value is refused with a :class:`~uqbench.errors.DataError` unless the source allows
unverified data; the records then say ``verified: False`` and ``notes`` carries the
caveat that must reach the report. A missing file is downloaded into the cache when the
source allows it; otherwise (or if the download fails) the error names the file, every
folder searched and how to get it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uqbench.data import checksums as ck
from uqbench.data import formats
from uqbench.data.source import FASHION_URLS, URLS, DataSource, DownloadError, download_file
from uqbench.errors import DataError

log = logging.getLogger(__name__)

MNIST_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
NOTMNIST_ARCHIVE = "notMNIST_small.tar.gz"
NOTMNIST_FOLDER = "notMNIST_small"
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"

# Sub-folders of a data folder searched for each data set, in order.
_SUBDIRS = {
    "mnist": ("mnist", "MNIST/raw", "."),
    "notmnist": ("notmnist", "."),
    "cifar10": ("cifar10", "."),
    "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw"),
}
_CACHE_SUBDIR = {
    "mnist": "mnist",
    "notmnist": "notmnist",
    "cifar10": "cifar10",
    "fashion-mnist": "fashion-mnist",
}
_DISPLAY = {
    "mnist": "MNIST",
    "notmnist": "notMNIST_small",
    "cifar10": "CIFAR-10",
    "fashion-mnist": "Fashion-MNIST",
}
#: Download locations per data set, when not :data:`URLS` (same file names as MNIST).
_URLS = {"fashion-mnist": FASHION_URLS}


@dataclass
class RawData:
    """Decoded arrays of one data set and the records of the files they came from.

    ``location`` is the folder or archive the data was read from; ``info`` holds
    data-set-specific facts (notMNIST: the unreadable files; CIFAR: label names).
    """

    dataset: str
    arrays: dict[str, np.ndarray]
    files: list[dict[str, Any]]
    location: Path
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def verified(self) -> bool:
        """True when every file matched its published checksum."""
        return bool(self.files) and all(f["verified"] for f in self.files)


def _record(dataset: str, file: str, path: Path | str, md5: str, expected: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "file": file,
        "path": str(path),
        "md5": md5,
        "expected_md5": expected,
        "verified": md5 == expected,
    }


def search_dirs(source: DataSource, dataset: str) -> list[Path]:
    """Every folder searched for ``dataset``, in order, without duplicates."""
    out: list[Path] = []
    for base in source.base_dirs():
        for sub in _SUBDIRS[dataset]:
            d = base if sub == "." else base / sub
            if d not in out:
                out.append(d)
    return out


def _missing_error(
    source: DataSource,
    dataset: str,
    missing: list[str],
    download_errors: list[str] | None,
) -> DataError:
    """One clear error: which files, every folder searched, what was tried, how to fix."""
    dirs = search_dirs(source, dataset)
    files = ", ".join(missing)
    lines = [
        f"{_DISPLAY[dataset]}: {'file' if len(missing) == 1 else 'files'} {files} not found.",
        "Looked in:",
        *[f"  {d}" for d in dirs],
    ]
    if download_errors is None:
        lines.append("Downloading is disabled (--no-download / DataSource(download=False)).")
    else:
        lines.append("Download failed:")
        lines += [f"  {e}" for e in download_errors]
    sub = _CACHE_SUBDIR[dataset]
    it = "it" if len(missing) == 1 else "them"
    table = _URLS.get(dataset, URLS)
    urls = [table[f][0] for f in missing if f in table]
    lines.append(f"To get {it}, download" if urls else f"To get {it}, obtain {files}")
    lines += [f"  {u}" for u in urls]
    lines.append(
        f"into {source.cache / sub}/ (the download cache), or place {it} in DIR/{sub}/ and "
        "pass --data-dir DIR (or set UQBENCH_DATA_DIR=DIR)."
    )
    return DataError("\n".join(lines))


def _fetch(
    source: DataSource, dataset: str, missing: list[str], expected: dict[str, str | None]
) -> dict[str, Path]:
    """Download the missing files into the cache, or raise the 'not found' DataError."""
    if not source.download:
        raise _missing_error(source, dataset, missing, None)
    dest = source.cache / _CACHE_SUBDIR[dataset]
    got: dict[str, Path] = {}
    errors: list[str] = []
    for name in missing:
        log.info("downloading %s into %s", name, dest)
        try:
            got[name] = download_file(name, dest, expected.get(name), _URLS.get(dataset))
        except DownloadError as exc:
            errors += [f"{name}: {e}" for e in exc.errors]
    if errors:
        raise _missing_error(source, dataset, missing, errors)
    return got


def _refuse_unverified(dataset: str, bad: list[dict[str, Any]], extra: str = "") -> DataError:
    lines = [
        f"{_DISPLAY[dataset]}: md5 mismatch - the data do not match the published checksum "
        "(unverified) and are refused by default."
    ]
    for r in bad:
        lines.append(f"  {r['file']} ({r['path']}): md5 {r['md5']}, expected {r['expected_md5']}")
    if extra:
        lines.append(extra)
    lines.append(
        "To use them anyway pass --allow-unverified (DataSource(allow_unverified=True)) or set "
        "UQBENCH_ALLOW_UNVERIFIED=1; results are then labelled as made from unverified data."
    )
    return DataError("\n".join(lines))


def _gate(
    source: DataSource, dataset: str, files: list[dict[str, Any]], check: bool, extra: str = ""
) -> None:
    """Refuse unverified files unless the source allows them (or ``check`` is False)."""
    bad = [r for r in files if not r["verified"]]
    if bad and check and not source.allow_unverified:
        raise _refuse_unverified(dataset, bad, extra)


def _note(raw: RawData, note: str) -> RawData:
    """Add the caveat ``note`` when the data are unverified."""
    if not raw.verified:
        raw.notes.append(note)
    return raw


# -- MNIST -----------------------------------------------------------------------------
def _find_idx(source: DataSource, dataset: str) -> dict[str, Path | None]:
    """Path of each IDX file of ``dataset`` (MNIST's file names), or None: the first
    search folder holding it, ``.gz`` preferred to uncompressed within a folder."""
    found: dict[str, Path | None] = {}
    for stem in MNIST_STEMS.values():
        found[stem] = next(
            (
                c
                for d in search_dirs(source, dataset)
                for c in (d / f"{stem}.gz", d / stem)
                if c.is_file()
            ),
            None,
        )
    return found


def _idx_paths(
    source: DataSource, dataset: str, found: dict[str, Path | None], md5_gz: dict[str, str]
) -> dict[str, Path]:
    """The path of every IDX file of ``dataset``: those ``found``, and the ``.gz`` of
    each one missing downloaded into the cache (or the 'not found' DataError)."""
    missing = [f"{s}.gz" for s, p in found.items() if p is None]
    if missing:
        got = _fetch(source, dataset, missing, {f"{s}.gz": md5_gz[s] for s in found})
        for name, path in got.items():
            found[name.removesuffix(".gz")] = path
    return {s: p for s, p in found.items() if p is not None}


def find_mnist(source: DataSource) -> dict[str, Path | None]:
    """Path of each MNIST file (``.gz`` preferred, uncompressed accepted), or None."""
    return _find_idx(source, "mnist")


def load_mnist(source: DataSource, *, check: bool = True) -> RawData:
    """MNIST as uint8 images [N, 28, 28] and int64 labels: train 60,000, test 10,000."""
    found = _idx_paths(source, "mnist", find_mnist(source), ck.MNIST_MD5_GZ)
    arrays: dict[str, np.ndarray] = {}
    files = []
    for key, stem in MNIST_STEMS.items():
        path = found[stem]
        arr, md5 = formats.read_idx(path)
        gz = path.name.endswith(".gz")
        expected = (ck.MNIST_MD5_GZ if gz else ck.MNIST_MD5_RAW)[stem]
        files.append(_record("mnist", path.name, path, md5, expected))
        if key.endswith("_x"):
            if arr.ndim != 3 or arr.dtype != np.uint8:
                raise DataError(f"{path}: expected uint8 images [N, H, W], got {arr.shape}")
        elif arr.ndim != 1:
            raise DataError(f"{path}: expected a 1-d label array, got shape {arr.shape}")
        arrays[key] = arr if key.endswith("_x") else arr.astype(np.int64)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(
                f"MNIST {split}: the images file {found[MNIST_STEMS[split + '_x']]} holds "
                f"{len(arrays[f'{split}_x'])} images but the labels file "
                f"{found[MNIST_STEMS[split + '_y']]} holds {len(arrays[f'{split}_y'])} labels; "
                "one of them is the wrong file"
            )
    location = found[MNIST_STEMS["train_x"]].parent
    _gate(source, "mnist", files, check)
    return _note(
        RawData("mnist", arrays, files, location),
        "MNIST from an UNVERIFIED copy (md5 mismatch) - results not comparable with the paper",
    )


# -- Fashion-MNIST -------------------------------------------------------------------
def find_fashion_mnist(source: DataSource) -> dict[str, Path | None]:
    """Path of each Fashion-MNIST file (``.gz`` preferred, uncompressed accepted), or None."""
    return _find_idx(source, "fashion-mnist")


def load_fashion_mnist(source: DataSource, *, check: bool = True) -> RawData:
    """Fashion-MNIST as uint8 images [N, 28, 28] and int64 labels: train 60,000, test 10,000.

    Same IDX format and file names as MNIST, in a ``fashion-mnist/`` sub-folder (or
    torchvision's ``FashionMNIST/raw/``). Each file is verified by the md5 of its
    *decompressed* content (recorded as its ``md5``), so recompressed copies of the
    upstream files verify as well as upstream's ``.gz``. Class names are in
    ``info["class_names"]``.
    """
    found = _idx_paths(source, "fashion-mnist", find_fashion_mnist(source), ck.FASHION_MD5_GZ)
    arrays: dict[str, np.ndarray] = {}
    files = []
    for key, stem in MNIST_STEMS.items():
        path = found[stem]
        arr, md5 = formats.read_idx(path, content_md5=True)
        files.append(_record("fashion-mnist", path.name, path, md5, ck.FASHION_MD5_RAW[stem]))
        want_dim = 3 if key.endswith("_x") else 1
        if arr.ndim != want_dim or (want_dim == 3 and arr.dtype != np.uint8):
            raise DataError(f"{path}: expected {'uint8 images' if want_dim == 3 else 'labels'}")
        arrays[key] = arr if key.endswith("_x") else arr.astype(np.int64)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(f"Fashion-MNIST {split}: image and label counts differ")
    location = found[MNIST_STEMS["train_x"]].parent
    _gate(source, "fashion-mnist", files, check)
    raw = RawData(
        "fashion-mnist", arrays, files, location, info={"class_names": list(FASHION_CLASSES)}
    )
    return _note(
        raw, "Fashion-MNIST from an UNVERIFIED copy (md5 of the decompressed files mismatch)"
    )


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# -- notMNIST --------------------------------------------------------------------------
def find_notmnist(source: DataSource) -> Path | None:
    """The notMNIST_small tarball or extracted folder, or None."""
    for d in search_dirs(source, "notmnist"):
        if (d / NOTMNIST_ARCHIVE).is_file():
            return d / NOTMNIST_ARCHIVE
        if (d / NOTMNIST_FOLDER).is_dir():
            return d / NOTMNIST_FOLDER
    return None


@dataclass
class _Decoded:
    """Decoded notMNIST: images, their names, unreadable files, digest, file count."""

    x: np.ndarray
    ok: list[str]
    bad: dict[str, str]
    digest: str
    n_files: int


def _load_decoded(path: Path) -> _Decoded | None:
    """Decoded notMNIST from the cache, if present and self-consistent; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            d = _Decoded(
                x=z["x"],
                ok=[str(s) for s in z["names"]],
                bad={str(k): str(v) for k, v in zip(z["bad_names"], z["bad_reasons"], strict=True)},
                digest=str(z["digest"]),
                n_files=int(z["n_files"]),
            )
    except Exception:  # noqa: BLE001 - any cache problem: decode again
        return None
    shape_ok = d.x.dtype == np.uint8 and d.x.ndim == 3 and d.x.shape[0] == len(d.ok)
    if not shape_ok or len(d.ok) + len(d.bad) != d.n_files:
        return None
    return d


def _save_decoded(path: Path, d: _Decoded) -> None:
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            np.savez(
                f,
                x=d.x,
                names=np.array(d.ok, dtype=str),
                bad_names=np.array(list(d.bad), dtype=str),
                bad_reasons=np.array(list(d.bad.values()), dtype=str),
                digest=np.array(d.digest),
                n_files=np.array(d.n_files),
            )
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs speed
        log.debug("cannot write decoded cache %s: %s", path, exc)
        tmp.unlink(missing_ok=True)


def _decode_notmnist(path: Path) -> _Decoded:
    """Read every PNG of a notMNIST tarball or folder, digest and decode them."""
    folder = formats.read_png_dir(path) if path.is_dir() else formats.read_png_tar(path)
    if not folder.files:
        raise DataError(f"{path}: holds no notMNIST PNG files (<letter A-J>/<name>.png)")
    digest = ck.notmnist_digest({n: ck.md5_bytes(b) for n, b in folder.files.items()})
    x, ok, bad = formats.decode_pngs(folder.files)
    return _Decoded(x, ok, bad, digest, len(folder.files))


def load_notmnist(source: DataSource, *, check: bool = True) -> RawData:
    """notMNIST_small letters A-J as uint8 images [N, 28, 28] and labels 0-9 (A=0).

    Files are taken in sorted-name order. Unreadable PNGs (upstream has two 0-byte files)
    are skipped and listed in ``info["unreadable"]`` (name -> reason). Verification is by
    the content digest of all PNG files (names and bytes, see
    :func:`~uqbench.data.checksums.notmnist_digest`), so a repacked archive verifies.

    The decoded arrays and the digest of a tarball are cached in ``<cache>/decoded/``
    under the md5 of the tarball's bytes, so a cache entry can only be used for the very
    file it was made from; without the cache the result is the same, only slower.
    """
    path = find_notmnist(source)
    if path is None:
        got = _fetch(source, "notmnist", [NOTMNIST_ARCHIVE], {NOTMNIST_ARCHIVE: None})
        path = got[NOTMNIST_ARCHIVE]
    cache: Path | None = None
    d: _Decoded | None = None
    if path.is_file():
        try:
            cache = source.cache / "decoded" / f"notmnist-{ck.md5_file(path)}.npz"
        except OSError as exc:
            raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        d = _load_decoded(cache)
    if d is None:
        d = _decode_notmnist(path)
        if cache is not None:
            _save_decoded(cache, d)
    files = [_record("notmnist", path.name, path, d.digest, ck.NOTMNIST_DIGEST)]
    _gate(
        source,
        "notmnist",
        files,
        check,
        f"  (the digest covers the names and md5s of all {ck.NOTMNIST_N_FILES} upstream PNG "
        f"files; this copy has {d.n_files})",
    )
    if not d.ok:
        raise DataError(f"{path}: none of its {d.n_files} PNG files could be decoded")
    letters = {c: i for i, c in enumerate(formats.NOTMNIST_LETTERS)}
    y = np.array([letters[n.split("/", 1)[0]] for n in d.ok], dtype=np.int64)
    raw = RawData(
        "notmnist",
        {"x": d.x, "y": y},
        files,
        path,
        info={"unreadable": dict(d.bad), "n_files": d.n_files, "names": d.ok},
    )
    if d.bad:
        raw.notes.append(
            f"notMNIST_small: {len(d.ok)} readable images; {len(d.bad)} unreadable PNG(s) "
            f"skipped ({', '.join(sorted(d.bad))})"
        )
    return _note(
        raw,
        "notMNIST_small from an UNVERIFIED copy (content digest mismatch) - OOD results not "
        "comparable with the paper",
    )


# -- CIFAR-10 --------------------------------------------------------------------------
def find_cifar10(source: DataSource) -> Path | None:
    """An extracted ``cifar-10-batches-py/`` folder (preferred) or the tarball, or None.

    A folder missing some batch files is skipped; when nothing else is found and nothing
    may be downloaded, it is returned, so that the error names the missing files (not
    the tarball, which the user never had)."""
    partial = None
    for d in search_dirs(source, "cifar10"):
        folder = d / CIFAR_FOLDER
        if folder.is_dir() and all((folder / m).is_file() for m in formats.CIFAR_MEMBERS[:6]):
            return folder
        if (d / CIFAR_ARCHIVE).is_file():
            return d / CIFAR_ARCHIVE
        if folder.is_dir() and partial is None:
            partial = folder
    return None if source.download else partial


def _cifar_members(path: Path) -> tuple[dict[str, bytes], str | None]:
    """Member bytes of a CIFAR folder or tarball, and the tarball's md5 (None: a folder)."""
    if path.is_dir():
        members = {}
        for m in formats.CIFAR_MEMBERS:
            p = path / m
            if p.is_file():
                try:
                    members[m] = p.read_bytes()
                except OSError as exc:
                    raise DataError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        return members, None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    # Hash while decompressing: both release the GIL on large buffers.
    with ThreadPoolExecutor(max_workers=1) as pool:
        md5 = pool.submit(ck.md5_bytes, raw)
        members = dict(formats.iter_cifar_tar(raw, str(path)))
        return members, md5.result()


def _cifar_records(
    path: Path, members: dict[str, bytes], tar_md5: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """File records of a CIFAR copy, and whether it is the known JPEG stand-in.

    A tarball with upstream's md5 gives one record. Otherwise (an extracted folder, or a
    tarball repacked around the upstream batch files) each member is checked against
    upstream's per-file md5; a tarball whose members do not all match is reported as
    the tarball (its md5 against upstream's).
    """
    if tar_md5 == ck.CIFAR_TARBALL_MD5:
        return [_record("cifar10", path.name, path, tar_md5, ck.CIFAR_TARBALL_MD5)], False
    if tar_md5 == ck.CIFAR_STANDIN_TARBALL_MD5:
        return [_record("cifar10", path.name, path, tar_md5, ck.CIFAR_TARBALL_MD5)], True
    member_md5 = {m: ck.md5_bytes(b) for m, b in members.items()}
    standin = all(member_md5.get(m) == e for m, e in ck.CIFAR_STANDIN_MEMBER_MD5.items())
    records = [
        _record(
            "cifar10",
            m if tar_md5 is None else f"{CIFAR_FOLDER}/{m}",
            path / m if tar_md5 is None else f"{path}::{CIFAR_FOLDER}/{m}",
            member_md5[m],
            ck.CIFAR_MEMBER_MD5[m],
        )
        for m in formats.CIFAR_MEMBERS
        if m in members
    ]
    if tar_md5 is not None and not all(r["verified"] for r in records):
        records = [_record("cifar10", path.name, path, tar_md5, ck.CIFAR_TARBALL_MD5)]
    return records, standin


def load_cifar10(source: DataSource, *, check: bool = True) -> RawData:
    """CIFAR-10 as uint8 images [N, 3, 32, 32] and int64 labels: train 50,000, test 10,000.

    A tarball verifies when its md5 is upstream's; an extracted folder (or a repacked
    tarball) verifies when every batch file's md5 is upstream's. Unverified copies are
    refused (before decoding) unless allowed.
    """
    path = find_cifar10(source)
    if path is None:
        got = _fetch(source, "cifar10", [CIFAR_ARCHIVE], {CIFAR_ARCHIVE: ck.CIFAR_TARBALL_MD5})
        path = got[CIFAR_ARCHIVE]
    members, tar_md5 = _cifar_members(path)
    absent = [m for m in formats.CIFAR_MEMBERS[:6] if m not in members]
    if absent:
        raise DataError(f"{path}: incomplete CIFAR-10 data, missing {', '.join(absent)}")
    files, standin = _cifar_records(path, members, tar_md5)
    if standin:
        note = (
            "CIFAR-10 from an UNVERIFIED copy (md5 mismatch; the shared copy is a JPEG-q75 "
            "stand-in) - results not comparable with the paper"
        )
        extra = "  This is the known lossy JPEG-q75 stand-in (see PROVENANCE-cifar10.md)."
    else:
        note = (
            "CIFAR-10 from an UNVERIFIED copy (md5 mismatch) - results not comparable with "
            "the paper"
        )
        extra = ""
    _gate(source, "cifar10", files, check, extra)

    def member_path(m: str) -> str:
        return str(path / m) if tar_md5 is None else f"{path}::{CIFAR_FOLDER}/{m}"

    xs: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    ys: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    for m in formats.CIFAR_MEMBERS[:6]:
        name = member_path(m)
        x, y = formats.batch_arrays(formats.unpickle_batch(members.pop(m), name), name)
        split = "test" if m == "test_batch" else "train"
        xs[split].append(x)
        ys[split].append(y)
    label_names = list(formats.CIFAR_LABEL_NAMES)
    if "batches.meta" in members:
        meta = formats.unpickle_batch(members["batches.meta"], member_path("batches.meta"))
        names = meta.get("label_names")
        if isinstance(names, list) and len(names) == 10:
            label_names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
    arrays = {
        "train_x": np.concatenate(xs["train"]),
        "train_y": np.concatenate(ys["train"]),
        "test_x": np.concatenate(xs["test"]),
        "test_y": np.concatenate(ys["test"]),
    }
    raw = RawData("cifar10", arrays, files, path, info={"label_names": label_names})
    return _note(raw, note)
