"""Published checksums of the upstream data files, and the hashing helpers.

MNIST: the ``.gz`` md5s are torchvision's list; the uncompressed md5s are the upstream
values listed by independent loaders (see ``PROVENANCE-mnist-notmnist.md``).
CIFAR-10: the tarball and per-batch md5s are torchvision's (upstream) list.
notMNIST_small: the upstream tarball's md5 is not published in a form we can check, and
the copy in ``shared/`` was repacked around byte-identical upstream PNGs, so it is
verified by a *content digest* independent of the archive packing (see
:func:`notmnist_digest`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

#: MNIST file stem -> md5 of the gzipped upstream file.
MNIST_MD5_GZ: dict[str, str] = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
#: MNIST file stem -> md5 of the uncompressed upstream IDX file.
MNIST_MD5_RAW: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: md5 of the upstream ``cifar-10-python.tar.gz``.
CIFAR_TARBALL_MD5 = "c58f30108f718f92721af3b95e74349a"
#: md5 of each upstream member of ``cifar-10-batches-py/``.
CIFAR_MEMBER_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
#: md5 of the known lossy JPEG-q75 stand-in in ``shared/data`` (PROVENANCE-cifar10.md),
#: so that results made from it can say exactly what they were made from.
CIFAR_STANDIN_TARBALL_MD5 = "d131a434dc45d9607613653576b49cad"
CIFAR_STANDIN_MEMBER_MD5: dict[str, str] = {
    "data_batch_1": "a2c6245651c98f2f2d8c8ff6017d8c45",
    "data_batch_2": "78c6a02061d4d33b2f05ada6eb210de4",
    "data_batch_3": "350a3771c4ecd5e50970045fa9614ba7",
    "data_batch_4": "d0473ec7b62efd28c5224c1457335fec",
    "data_batch_5": "f9bf39afcbacaccecec531f51b0990ff",
    "test_batch": "8187098082713dd253011f2084f1120d",
    "batches.meta": "56a2023d12d9afdf5284508eeb834c17",
}


def content_pairs(dataset: str, file: str, md5: str) -> list[tuple[str, str]]:
    """``(name, md5)`` pairs naming what one data-file record holds, the same whatever form
    the copy is stored in, so that two runs' copies can be compared: a CIFAR-10 tarball
    (upstream's or the known stand-in) stands for its six batch files, a member of a tarball
    is named as in the extracted folder, and ``batches.meta`` (label names only, optional in a
    folder) is left out; notMNIST's record is a digest of all its PNGs, tarball or folder;
    Fashion-MNIST's md5 is of the decompressed content, ``.gz`` or not. MNIST's md5 is of
    the file's bytes, so a ``.gz`` and its raw file are told apart by their records alone
    (both verified: the same upstream content, which the comparison allows for)."""
    if dataset == "cifar10":
        members = {
            CIFAR_TARBALL_MD5: CIFAR_MEMBER_MD5,
            CIFAR_STANDIN_TARBALL_MD5: CIFAR_STANDIN_MEMBER_MD5,
        }
        if md5 in members:
            return [(m, h) for m, h in members[md5].items() if m != "batches.meta"]
        name = file.rsplit("/", 1)[-1]
        return [] if name == "batches.meta" else [(name, md5)]
    if dataset == "notmnist":
        return [("notMNIST_small", md5)]
    if dataset == "fashion-mnist":
        return [(file.removesuffix(".gz"), md5)]
    return [(file, md5)]


#: Content digest of the 18,726 upstream notMNIST_small PNG files (see
#: :func:`notmnist_digest`); equal to the value in PROVENANCE-mnist-notmnist.md.
NOTMNIST_DIGEST = "c4a392fa54b9a63558fed9ccc7426ace"
NOTMNIST_N_FILES = 18726


def md5_bytes(data: bytes | memoryview) -> str:
    """Hex md5 of ``data``."""
    return hashlib.md5(data).hexdigest()


def md5_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex md5 of the file at ``path``, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def notmnist_digest(file_md5s: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Digest of a notMNIST folder from its files' relative names and md5s.

    ``file_md5s`` maps each file's name relative to ``notMNIST_small/`` (``"A/xyz.png"``)
    to the md5 of its bytes. The digest is the md5 of the text that
    ``cd notMNIST_small && find . -type f | sort | xargs md5sum`` prints: one line
    ``"<md5>  ./<name>\\n"`` per file, sorted by name (C locale). It covers the names
    (hence the labels) and the bytes of every file but not how they were archived.
    """
    items = file_md5s.items() if isinstance(file_md5s, Mapping) else file_md5s
    lines = [f"{md5}  ./{name}\n" for name, md5 in sorted(items, key=lambda t: t[0])]
    return hashlib.md5("".join(lines).encode("utf-8")).hexdigest()


#: Fashion-MNIST file stem -> md5 of the *decompressed* upstream IDX file. A copy is
#: verified by the md5 of its decompressed content, which is the same for upstream's
#: ``.gz`` files and for recompressed copies (PROVENANCE-fashion-mnist.md).
FASHION_MD5_RAW: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
#: md5 of upstream's ``.gz`` files (checked on download only).
FASHION_MD5_GZ: dict[str, str] = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
