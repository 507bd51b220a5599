"""Readers of the upstream file formats: MNIST IDX, notMNIST PNG folders, CIFAR-10 pickles.

Every reader raises :class:`~uqbench.errors.DataError` naming the file when it is
truncated or corrupt; nothing from deep inside gzip, tarfile, PIL or pickle escapes.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import struct
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uqbench.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
NOTMNIST_LETTERS = tuple("ABCDEFGHIJ")
CIFAR_MEMBERS = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)
CIFAR_LABEL_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def gunzip(data: bytes, name: str) -> bytes:
    """Decompress gzip ``data`` read from file ``name``; DataError if truncated or corrupt."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: truncated or corrupt gzip file ({exc})") from None


# -- MNIST IDX -------------------------------------------------------------------------
def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Parse an uncompressed IDX file (big-endian header: 0, 0, dtype code, ndim, dims)."""
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DataError(f"{name}: not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{name}: truncated or corrupt IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[data[2]]
    count = math.prod(dims)
    if len(data) - header != count * dtype.itemsize:
        raise DataError(
            f"{name}: truncated or corrupt IDX file: the header announces shape {dims} "
            f"({count * dtype.itemsize} data bytes) but the file holds {len(data) - header}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: Path, *, content_md5: bool = False) -> tuple[np.ndarray, str]:
    """Read an IDX file, gzipped or not; return the array and the md5 of the file's bytes.

    With ``content_md5`` the md5 is that of the decompressed IDX content instead (the
    same for any gzip packing of the same file).
    """
    from uqbench.data.checksums import md5_bytes

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    data = gunzip(raw, str(path)) if raw[:2] == _GZIP_MAGIC else raw
    md5 = md5_bytes(data if content_md5 else raw)
    return parse_idx(data, str(path)), md5


# -- tar helpers -----------------------------------------------------------------------
def iter_tar_files(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """Yield ``(member name, bytes)`` for every regular file of a tar (gzipped or not)."""
    if data[:2] == _GZIP_MAGIC:
        data = gunzip(data, name)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                end = m.offset_data + m.size
                if end > len(data):
                    raise DataError(f"{name}: truncated tar archive (member {m.name} is cut off)")
                yield m.name, data[m.offset_data : end]
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{name}: truncated or corrupt tar archive ({exc})") from None


# -- notMNIST --------------------------------------------------------------------------
@dataclass
class PngFolder:
    """The PNG files of a notMNIST folder: relative name (``"A/x.png"``) -> bytes."""

    files: dict[str, bytes]
    ignored: list[str] = field(default_factory=list)


def _notmnist_rel(member: str) -> str | None:
    """``"<...>/<letter>/<file>.png"`` -> ``"<letter>/<file>.png"``; None for other files."""
    parts = member.replace("\\", "/").split("/")
    if len(parts) >= 2 and parts[-2] in NOTMNIST_LETTERS and parts[-1].lower().endswith(".png"):
        return f"{parts[-2]}/{parts[-1]}"
    return None


def read_png_tar(path: Path) -> PngFolder:
    """Read the ``<letter>/*.png`` files of a notMNIST tarball (``.tar.gz`` or ``.tar``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    out = PngFolder({})
    for member, data in iter_tar_files(raw, str(path)):
        rel = _notmnist_rel(member)
        if rel is None:
            out.ignored.append(member)
        elif rel in out.files:
            raise DataError(f"{path}: file {rel} appears twice in the archive")
        else:
            out.files[rel] = data
    return out


def read_png_dir(path: Path) -> PngFolder:
    """Read the ``<letter>/*.png`` files of an extracted ``notMNIST_small/`` folder."""
    out = PngFolder({})
    for letter in NOTMNIST_LETTERS:
        sub = path / letter
        if not sub.is_dir():
            continue
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.name.lower().endswith(".png"):
                try:
                    out.files[f"{letter}/{f.name}"] = f.read_bytes()
                except OSError as exc:
                    raise DataError(f"{f}: cannot be read ({exc.strerror or exc})") from None
    return out


def decode_pngs(
    files: dict[str, bytes], shape: tuple[int, int] = (28, 28)
) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Decode grey-level PNGs in sorted-name order.

    Returns ``(images uint8 [N, H, W], names of the decoded files, {unreadable name:
    reason})``. A file PIL cannot decode (the upstream 0-byte PNGs) or of another size
    is skipped and reported, never fatal.
    """
    from PIL import Image

    names = sorted(files)
    images = np.empty((len(names), *shape), dtype=np.uint8)
    ok: list[str] = []
    bad: dict[str, str] = {}
    for name in names:
        data = files[name]
        if not data:
            bad[name] = "empty file (0 bytes)"
            continue
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                if im.mode != "L":
                    im = im.convert("L")
                arr = np.asarray(im)
        except (OSError, ValueError, SyntaxError, struct.error) as exc:
            bad[name] = f"unreadable PNG ({exc})"
            continue
        except Image.DecompressionBombError:  # a header claiming a huge image: not decoded
            bad[name] = "unreadable PNG (declares a size too large to decode)"
            continue
        if arr.shape != shape:
            bad[name] = f"size {arr.shape[1]}x{arr.shape[0]}, expected {shape[1]}x{shape[0]}"
            continue
        images[len(ok)] = arr
        ok.append(name)
    return images[: len(ok)].copy(), ok, bad


# -- CIFAR-10 --------------------------------------------------------------------------
class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that only builds what a CIFAR batch holds (numpy arrays, dicts, lists)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = "numpy._core" + module[len("numpy.core") :]  # numpy 2 name, no warning
        return super().find_class(module, name)


def unpickle_batch(data: bytes, name: str) -> dict[str, object]:
    """Load a CIFAR pickle (Python-2 style, ``encoding='latin1'``); keys become ``str``."""
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{name}: truncated or corrupt CIFAR pickle ({exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def batch_arrays(batch: dict[str, object], name: str) -> tuple[np.ndarray, np.ndarray]:
    """``data`` uint8 [n, 3, 32, 32] (channel-major rows) and ``labels`` int64 [n]."""
    data = batch.get("data")
    labels = batch.get("labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{name}: not a CIFAR-10 batch (no uint8 'data' of shape [n, 3072])")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: not a CIFAR-10 batch (bad 'labels')") from None
    if y.shape != (data.shape[0],) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DataError(f"{name}: not a CIFAR-10 batch ('labels' do not match 'data')")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), y


def iter_cifar_tar(raw: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """Stream the batch members of a CIFAR tarball: yield ``(basename, bytes)``."""
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|*") as tf:
            for m in tf:
                base = m.name.rsplit("/", 1)[-1]
                if not m.isfile() or base not in CIFAR_MEMBERS:
                    continue
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                if len(data) != m.size:
                    raise DataError(f"{name}: truncated tar archive (member {m.name} is cut off)")
                yield base, data
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{name}: truncated or corrupt tar archive ({exc})") from None
