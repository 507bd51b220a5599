"""A task on your own MNIST-format files, and an OOD set of uniform noise, from outside uqbench.

``my-digits`` reads ``<data dir>/my-digits/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``
with uqbench's public IDX reader. ``uniform-noise`` is an OOD set for any task whose
inputs are pixels in [0, 1]: add it to MNIST with ``[task.mnist] ood = ["notmnist",
"uniform-noise"]``.
"""

import zlib
from pathlib import Path

import torch

import uqbench
from uqbench.data import images_to_tensor, labels_to_tensor, read_idx, stratified_indices

#: md5 of each file as published by its authors (None: nothing published to check against).
PUBLISHED_MD5: dict[str, str | None] = {}


@uqbench.register_ood_set("uniform-noise")
class UniformNoise(uqbench.OODSet):
    """Inputs with every value drawn uniformly from [0, 1]; 2,000 unless n says otherwise."""

    display_name = "Uniform noise"

    def load(self, source, *, in_shape, n, seed, stream):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(stream.encode()))
        return uqbench.OODData(torch.rand(n or 2000, *in_shape, generator=gen))


@uqbench.register_task("my-digits")
class MyDigits(uqbench.Task):
    """Ten-class 28x28 grey images in MNIST's IDX format, on LeNet-5."""

    display_name = "My digits (OOD: uniform noise)"
    kind = "classification"
    arch = "lenet5"
    in_shape = (1, 28, 28)
    n_outputs = 10
    class_names = tuple(str(i) for i in range(10))
    method_defaults = {  # family settings on this task: a suite's [task.X] method table
        "ffg": {"max_std": 0.5},
        "mnf": {"max_std": 0.5},
        "ensemble": {"members": 5, "adv_eps": 0.25},
    }
    train_defaults = {"epochs": 10, "batch_size": 100, "lr": 1e-3}
    fgsm_eps = (0.0, 0.1, 0.2)
    input_range = (0.0, 1.0)
    ood_sets = ("uniform-noise",)

    def load(self, source, *, n_train=None, n_test=None, n_ood=None, seed=0):
        folder = Path(source.root or source.cache) / "my-digits"
        splits, files = {}, []
        for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
            arrays = []
            for kind in ("images-idx3", "labels-idx1"):
                path = folder / f"{prefix}-{kind}-ubyte.gz"
                if not path.is_file():
                    raise uqbench.DataError(f"my-digits: {path} not found")
                arr, md5 = read_idx(path)
                expected = PUBLISHED_MD5.get(path.name)
                files.append(
                    {
                        "dataset": "my-digits",
                        "file": path.name,
                        "path": str(path),
                        "md5": md5,
                        "expected_md5": expected,
                        "verified": md5 == expected,
                    }
                )
                arrays.append(arr)
            x, y = arrays
            idx = stratified_indices(y, n, seed, stream=f"my-digits/{split}")
            # index: where each image lies in the file (pairs seeds' test-set noise)
            splits[split] = uqbench.Split(
                images_to_tensor(x[idx]), labels_to_tensor(y[idx]), torch.from_numpy(idx)
            )
        verified = all(f["verified"] for f in files)
        if not verified and not source.allow_unverified:
            raise uqbench.DataError(
                "my-digits: no published checksum matches these files; pass --allow-unverified"
            )
        notes = [] if verified else ["my-digits: files without a published checksum"]
        return uqbench.TaskData(splits["train"], splits["test"], files=files, notes=notes)
