"""Seeded stratified subsetting (the one home of both algorithms), and the conversion of
uint8 images to model inputs."""

from __future__ import annotations

import zlib

import numpy as np
import torch

from uqbench.errors import ConfigError


def class_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """Per-class sample sizes proportional to ``counts`` summing to ``n`` (largest remainder).

    Each class gets ``floor(n * count / total)``; the leftover units go to the classes
    with the largest fractional parts (ties: lower class index first).
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    exact = counts * n / total
    quotas = np.floor(exact).astype(np.int64)
    left = n - int(quotas.sum())
    order = np.lexsort((np.arange(len(counts)), -(exact - quotas)))
    quotas[order[:left]] += 1
    return np.minimum(quotas, counts)


def stratified_indices(
    labels: np.ndarray | torch.Tensor, n: int | None, seed: int, stream: str = ""
) -> np.ndarray:
    """Sorted indices of a class-stratified random subset of size ``n`` (None: all).

    Deterministic given ``(seed, stream)``; ``stream`` (e.g. ``"train"``) makes the
    draws of different splits independent for the same seed.
    """
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    total = len(y)
    if n is None or n >= total:
        return np.arange(total)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(f"subset size must be a positive integer or None, got {n!r}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    quotas = class_quotas(counts, int(n))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(stream.encode())]))
    picked = []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        picked.append(rng.permutation(members)[: quotas[c]])
    return np.sort(np.concatenate(picked))


def stratified_subset(y: torch.Tensor, n: int | None, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded subset of ``n`` labels with class shares as in ``y``: the
    evaluation's subsets (FGSM, dataset shift) of an already loaded test set.

    Examples are shuffled, then ordered by ``(rank within class + 1/2) / class size``,
    which interleaves the classes in proportion to their sizes; the first ``n`` are
    taken (and returned sorted). ``None`` or ``n >= len(y)`` gives all indices. Unlike
    :func:`stratified_indices` (the data layer's subsets, drawn per ``stream``), a
    smaller ``n`` gives a prefix of the same order, so the attacked points of a smaller
    ``fgsm_n`` are among those of a larger one; results depend on the exact draw, so the
    two algorithms stay as they are.
    """
    total = len(y)
    if n is None or n >= total:
        return torch.arange(total)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=gen)
    labels = y.cpu()[perm].numpy()
    key = np.empty(total)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        key[where] = (np.arange(len(where)) + 0.5) / len(where)
    order = np.argsort(key, kind="stable")[:n]
    return perm[torch.as_tensor(order)].sort().values


def images_to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W] or [N, C, H, W] -> float32 [N, C, H, W] in [0, 1] (x / 255)."""
    t = torch.from_numpy(np.asarray(x).astype(np.float32))  # a writable copy
    if t.dim() == 3:
        t = t.unsqueeze(1)
    return t.div_(255.0)


def labels_to_tensor(y: np.ndarray) -> torch.Tensor:
    """Class labels (or positions, :attr:`uqbench.tasks.base.Split.index`) -> int64 tensor
    [N] (a copy)."""
    return torch.from_numpy(np.asarray(y).astype(np.int64))
