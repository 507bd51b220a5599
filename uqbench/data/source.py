"""Where data sets are looked for, and how missing files are downloaded.

Lookup order (:meth:`DataSource.resolve`): the ``--data-dir`` argument (or, without it, the
``UQBENCH_DATA_DIR`` environment variable: the argument wins), then the user cache
(``$XDG_CACHE_HOME/uqbench/data`` or ``~/.cache/uqbench/data``; ``$UQBENCH_CACHE_DIR/data``
when that variable is set, as for checkpoints). The cache is always
searched last and is where downloads go. Inside a data folder each data set has its own
sub-folder (``mnist/``, ``notmnist/``, ``cifar10/``, ``fashion-mnist/``); torchvision's layouts
(``MNIST/raw/``, a top-level ``cifar-10-batches-py/``) are accepted too.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from uqbench.data.checksums import md5_file

ENV_DATA_DIR = "UQBENCH_DATA_DIR"
ENV_ALLOW_UNVERIFIED = "UQBENCH_ALLOW_UNVERIFIED"
_TRUE = {"1", "true", "yes"}

#: Download locations (mirrors in order). Tests may point these at ``file://`` URLs.
URLS: dict[str, list[str]] = {
    **{
        f"{stem}.gz": [
            f"https://ossci-datasets.s3.amazonaws.com/mnist/{stem}.gz",
            f"http://yann.lecun.com/exdb/mnist/{stem}.gz",
        ]
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    },
    "notMNIST_small.tar.gz": ["http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"],
    "cifar-10-python.tar.gz": ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"],
}
#: Fashion-MNIST's files share MNIST's names, so they have their own table (upstream's
#: mirror, as torchvision's).
FASHION_URLS: dict[str, list[str]] = {
    f"{stem}.gz": [f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{stem}.gz"]
    for stem in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
}
DOWNLOAD_TIMEOUT_S = 60.0


def default_cache_dir() -> Path:
    """The user cache for data: ``data/`` of :func:`uqbench.environment.cache_dir`."""
    from uqbench.environment import cache_dir

    return cache_dir() / "data"


def env_allows_unverified() -> bool:
    """True when ``UQBENCH_ALLOW_UNVERIFIED`` is 1, true or yes (any case)."""
    return os.environ.get(ENV_ALLOW_UNVERIFIED, "").strip().lower() in _TRUE


@dataclass
class DataSource:
    """Where to find the data, whether to download it, and whether to accept bad checksums.

    ``root`` is an explicit data folder (searched first); the cache folder (``cache_dir``,
    default :func:`default_cache_dir`) is searched next and receives downloads and
    decoded-array caches. ``allow_unverified`` accepts files whose checksum does not
    match the published one; the task data then records them as unverified.
    """

    root: Path | None = None
    download: bool = True
    allow_unverified: bool = False
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.root is not None:
            self.root = Path(self.root).expanduser()
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir).expanduser()

    @classmethod
    def resolve(
        cls,
        data_dir: str | Path | None = None,
        download: bool = True,
        allow_unverified: bool | None = None,
    ) -> DataSource:
        """Apply the lookup order: ``data_dir`` (else ``$UQBENCH_DATA_DIR``), then the cache.

        ``allow_unverified=None`` reads ``UQBENCH_ALLOW_UNVERIFIED`` (1/true/yes).
        """
        root: Path | None = None
        if data_dir is not None and str(data_dir) != "":
            root = Path(data_dir)
        elif os.environ.get(ENV_DATA_DIR, "").strip():
            root = Path(os.environ[ENV_DATA_DIR].strip())
        if allow_unverified is None:
            allow_unverified = env_allows_unverified()
        return cls(root=root, download=download, allow_unverified=bool(allow_unverified))

    @property
    def cache(self) -> Path:
        """The cache folder (downloads, decoded arrays)."""
        return self.cache_dir if self.cache_dir is not None else default_cache_dir()

    def base_dirs(self) -> list[Path]:
        """The data folders searched, in order: ``root`` (if any), then the cache."""
        dirs = [self.root] if self.root is not None else []
        if self.cache not in dirs:
            dirs.append(self.cache)
        return dirs

    def describe(self) -> str:
        """One line saying where data is looked for, for messages and logs."""
        return " then ".join(str(d) for d in self.base_dirs())


def as_source(source: DataSource | str | Path | None) -> DataSource:
    """Accept a :class:`DataSource`, a data folder, or None (environment and cache)."""
    if isinstance(source, DataSource):
        return source
    return DataSource.resolve(data_dir=source)


class DownloadError(Exception):
    """Internal: every mirror failed; ``errors`` says why, one entry per URL."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def download_file(
    filename: str,
    dest_dir: Path,
    expected_md5: str | None = None,
    urls: dict[str, list[str]] | None = None,
) -> Path:
    """Download ``filename`` from its mirrors (``urls``, default :data:`URLS`) into ``dest_dir``.

    The file is written to a ``.part`` file and renamed only once complete (and, when
    ``expected_md5`` is given, once its md5 matches). Raises :class:`DownloadError`
    listing every mirror's failure.
    """
    mirrors = (URLS if urls is None else urls).get(filename, [])
    if not mirrors:
        raise DownloadError([f"no download location is known for {filename}"])
    errors: list[str] = []
    dest = dest_dir / filename
    tmp = dest_dir / (filename + ".part")
    for url in mirrors:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                dest_dir.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(resp, out, 1 << 20)
            if expected_md5 is not None:
                got = md5_file(tmp)
                if got != expected_md5:
                    errors.append(f"{url}: downloaded file has md5 {got}, expected {expected_md5}")
                    tmp.unlink(missing_ok=True)
                    continue
            os.replace(tmp, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            errors.append(f"{url}: {reason}")
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    raise DownloadError(errors)
