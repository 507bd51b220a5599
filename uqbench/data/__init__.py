"""The data layer: find, download, verify and decode MNIST, notMNIST_small and CIFAR-10.

* :class:`DataSource` - where to look (``--data-dir``, ``$UQBENCH_DATA_DIR``, the user
  cache), whether to download, whether to accept unverified copies.
* ``load_mnist`` / ``load_notmnist`` / ``load_cifar10`` - uint8 arrays plus file records
  (tasks turn them into tensors).
* :func:`verify_all` / :func:`format_verify_table` - ``uqbench data verify``.
* :func:`stratified_indices` - seeded class-stratified subsets.
"""

from uqbench.data.datasets import RawData, load_cifar10, load_mnist, load_notmnist
from uqbench.data.source import DataSource, as_source, default_cache_dir
from uqbench.data.subset import images_to_tensor, labels_to_tensor, stratified_indices
from uqbench.data.verify import format_verify_table, verify_all

__all__ = [
    "DataSource",
    "RawData",
    "as_source",
    "default_cache_dir",
    "format_verify_table",
    "images_to_tensor",
    "labels_to_tensor",
    "load_cifar10",
    "load_mnist",
    "load_notmnist",
    "stratified_indices",
    "verify_all",
]
