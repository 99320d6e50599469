"""MNIST: find, verify and load the four standard IDX files.

Where the files come from, in order: the ``data_dir`` argument, the ``FASTBP_DATA`` environment
variable, the user cache (``$XDG_CACHE_HOME/fastbp/mnist``, default ``~/.cache/fastbp/mnist``),
and last a download from public mirrors into that cache. A directory named explicitly (argument
or variable) must hold the files: a typo there is an error, not a silent 50 MB download.

Every file is checked on load: its IDX magic number, its dimensions, its size, and (unless
``verify=False``, for other data in IDX format) the SHA-256 of its decompressed bytes.
Files may be gzipped (``.gz``) or raw.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

# name -> (SHA-256 of the decompressed file, shape)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", (60000, 28, 28)),
    "train-labels-idx1-ubyte": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", (60000,)),
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", (10000,)),
}
CHECKSUMS = {name: sha for name, (sha, _) in MNIST_FILES.items()}

# The original site no longer serves the files; these mirrors host the same gzipped files.
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

_IDX_DTYPE_UBYTE = 0x08


class DataError(RuntimeError):
    """MNIST could not be found, downloaded or read; the message says where and how to fix it."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastbp" / "mnist"


def _file_in(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _missing(directory: Path, names) -> list[str]:
    return [name for name in names if _file_in(directory, name) is None]


def read_idx(path, sha256: str | None = None, shape: tuple | None = None, compressed: bool | None = None) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or raw) as a uint8 array, checked for structure.

    ``sha256`` (of the decompressed bytes) and ``shape``, when given, must match.
    ``compressed=None`` tells gzip from raw by the ``.gz`` suffix.
    """
    path = Path(path)
    if compressed is None:
        compressed = path.suffix == ".gz"
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip raises these for truncated or non-gzip data
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated, delete it and fetch it again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_DTYPE_UBYTE or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: wrong magic number {raw[:4].hex() or '(empty file)'}; not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header ({len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(
            f"{path}: wrong size, {len(raw)} bytes where dimensions {dims} need {expected}; the file is truncated or corrupt"
        )
    if shape is not None and dims != tuple(shape):
        raise DataError(f"{path}: dimensions {dims}, expected {tuple(shape)}")
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise DataError(
                f"{path}: wrong checksum (SHA-256 of its contents is {digest}, expected {sha256}); "
                f"the file is corrupt or not the standard MNIST (pass verify=False / --no-verify for other IDX data)"
            )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def download_mnist(
    directory,
    mirrors: Sequence[str] = MIRRORS,
    checksums: Mapping[str, str] = CHECKSUMS,
    timeout: float = 30.0,
) -> Path:
    """Download the MNIST files missing from ``directory`` and verify each before keeping it.

    A file is written to a temporary name and moved into place only once its checksum matches,
    so an interrupted or corrupt download never leaves a half-written file behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in _missing(directory, checksums):
        errors = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".gz.part", dir=directory)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                read_idx(tmp, sha256=checksums[name], compressed=True)
                os.replace(tmp, directory / f"{name}.gz")
                break
            except (urllib.error.URLError, OSError, DataError, ValueError) as exc:
                errors.append(f"{url}: {exc}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(f"could not download {name}:\n  " + "\n  ".join(errors))
    return directory


def find_mnist(data_dir=None, download: bool = True) -> Path:
    """The directory that holds the four MNIST files (see the module doc for the search order)."""
    names = list(MNIST_FILES)
    if data_dir is not None:
        return _require(Path(data_dir), names, "the data_dir argument (--data)")
    env = os.environ.get("FASTBP_DATA")
    if env:
        return _require(Path(env), names, "the FASTBP_DATA environment variable")
    cache = cache_dir()
    if not _missing(cache, names):
        return cache
    if not download:
        raise DataError(_not_found_message(cache, "downloads are disabled"))
    try:
        return download_mnist(cache)
    except DataError as exc:
        raise DataError(_not_found_message(cache, f"the download failed: {exc}")) from exc


def _require(directory: Path, names, source: str) -> Path:
    missing = _missing(directory, names)
    if missing:
        raise DataError(
            f"MNIST not found in {directory} (named by {source}): missing {', '.join(missing)} "
            f"(each may be gzipped, with .gz). Point it at the folder that holds the four IDX files."
        )
    return directory


def _not_found_message(cache: Path, why: str) -> str:
    return (
        f"MNIST is not available: FASTBP_DATA is not set, the cache {cache} does not hold it, and {why}.\n"
        f"Fix: set FASTBP_DATA=/path/to/mnist (a folder with train-images-idx3-ubyte.gz, "
        f"train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), "
        f"pass --data DIR, or copy the files into {cache}."
    )


def load_mnist(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False,
               data_dir=None, download: bool = True, verify: bool = True):
    """``(x_train, t_train), (x_test, t_test)``, as the seed's ``load_mnist`` returns them.

    normalize: float32 pixels in [0, 1] (else uint8 0..255). flatten: images as (N, 784)
    (else (N, 1, 28, 28)). one_hot_label: labels as (N, 10) float32 one-hot rows (else uint8).
    """
    directory = find_mnist(data_dir, download)
    arrays = {}
    for name, (sha, shape) in MNIST_FILES.items():
        arrays[name] = read_idx(_file_in(directory, name), sha256=sha if verify else None,
                                shape=shape if verify else None)

    def images(name):
        x = arrays[name]
        x = x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *x.shape[1:])
        if not normalize:
            return x.copy()
        pixels = x.astype(np.float32)
        pixels /= 255.0  # in place: the float images exist once (188 MB for the training set)
        return pixels

    def labels(name):
        t = arrays[name]
        return np.eye(10, dtype=np.float32)[t] if one_hot_label else t.copy()

    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")), (
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )
