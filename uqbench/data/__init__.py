"""The data layer: find, download, verify and decode MNIST, notMNIST_small, CIFAR-10 and
Fashion-MNIST.

* :class:`DataSource` - where to look (``--data-dir``, ``$UQBENCH_DATA_DIR``, the user
  cache), whether to download, whether to accept unverified copies.
* ``load_mnist`` / ``load_notmnist`` / ``load_cifar10`` / ``load_fashion_mnist`` - uint8
  arrays plus file records (tasks turn them into tensors).
* Readers of the upstream formats, for plug-ins that bring their own files:
  :func:`read_idx` / :func:`parse_idx` (MNIST-style IDX, gzipped or not),
  :func:`read_png_tar` / :func:`read_png_dir` + :func:`decode_pngs` (notMNIST-style
  ``<class>/<name>.png`` trees), :func:`unpickle_batch` + :func:`batch_arrays` (CIFAR
  python batches, unpickled safely), :func:`md5_file` / :func:`md5_bytes`.
* :func:`verify_all` / :func:`format_verify_table` - ``uqbench data verify``.
* :func:`stratified_indices` - seeded class-stratified subsets.
"""

from uqbench.data.checksums import md5_bytes, md5_file
from uqbench.data.datasets import (
    RawData,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_notmnist,
)
from uqbench.data.formats import (
    batch_arrays,
    decode_pngs,
    parse_idx,
    read_idx,
    read_png_dir,
    read_png_tar,
    unpickle_batch,
)
from uqbench.data.source import DataSource, as_source, default_cache_dir
from uqbench.data.subset import images_to_tensor, labels_to_tensor, stratified_indices
from uqbench.data.verify import format_verify_table, verify_all

__all__ = [
    "DataSource",
    "RawData",
    "as_source",
    "batch_arrays",
    "decode_pngs",
    "default_cache_dir",
    "format_verify_table",
    "images_to_tensor",
    "labels_to_tensor",
    "load_cifar10",
    "load_fashion_mnist",
    "load_mnist",
    "load_notmnist",
    "md5_bytes",
    "md5_file",
    "parse_idx",
    "read_idx",
    "read_png_dir",
    "read_png_tar",
    "stratified_indices",
    "unpickle_batch",
    "verify_all",
]
