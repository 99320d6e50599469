"""MNIST: find, verify and load the four standard IDX files.

Where the files come from, in order: the ``data_dir`` argument, the ``FASTBP_DATA`` environment
variable, the user cache (``$XDG_CACHE_HOME/fastbp/mnist``, default ``~/.cache/fastbp/mnist``),
and last a download from public mirrors into that cache. A directory named explicitly (argument
or variable) must hold the files: a typo there is an error, not a silent 50 MB download.

Every file is checked on load: its IDX magic number, its dimensions, its size, and (unless
``verify=False``, for other data in IDX format) the SHA-256 of its decompressed bytes.
Files may be gzipped (``.gz``) or raw. A verified load keeps a decoded copy in the user cache
(fastbp/decoded.py), from which the next load of the same files takes milliseconds.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from . import decoded
from ._system import require_memory

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


def _sizes_from_gzip_trailer(path: Path) -> int | None:
    """The decompressed size mod 2**32 that a (single-member) gzip file records in its last 4 bytes."""
    try:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little")
    except OSError:
        return None


def read_idx(path, sha256: str | None = None, shape: tuple | None = None, compressed: bool | None = None) -> np.ndarray:
    """An IDX file of unsigned bytes (gzipped or raw) as a uint8 array, checked for structure.

    ``sha256`` (of the decompressed bytes) and ``shape``, when given, must match.
    ``compressed=None`` tells gzip from raw by the ``.gz`` suffix. The header is read and checked
    first; then no more is decompressed than it declares (a file that inflates to more is refused
    without inflating it all), into one array of that size.
    """
    path = Path(path)
    if compressed is None:
        compressed = path.suffix == ".gz"
    opener = gzip.open if compressed else open
    digest = hashlib.sha256()
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != _IDX_DTYPE_UBYTE or not 1 <= magic[3] <= 4:
                raise DataError(f"{path}: wrong magic number {magic.hex() or '(empty file)'}; not an IDX file of unsigned bytes")
            ndim = magic[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: truncated header ({4 + len(dims_raw)} bytes)")
            dims = tuple(int.from_bytes(dims_raw[4 * i:4 * i + 4], "big") for i in range(ndim))
            if shape is not None and dims != tuple(shape):
                raise DataError(f"{path}: dimensions {dims}, expected {tuple(shape)}")
            header = 4 + 4 * ndim
            size = int(np.prod(dims, dtype=object))
            expected = header + size
            _check_declared_size(path, compressed, dims, expected)
            digest.update(magic + dims_raw)
            payload = np.empty(size, dtype=np.uint8)
            got = f.readinto(memoryview(payload)) if size else 0
            extra = f.read(1)
    except (OSError, EOFError) as exc:  # gzip raises these for truncated or non-gzip data
        raise DataError(f"{path}: cannot read ({exc}); the file is corrupt or truncated, delete it and fetch it again") from exc
    if got != size or extra:
        actual = f"{header + got} bytes" if not extra else (
            f"{path.stat().st_size} bytes" if not compressed else f"more than {expected} bytes")
        raise DataError(
            f"{path}: wrong size, {actual} where dimensions {dims} need {expected}; the file is truncated or corrupt"
        )
    if sha256 is not None:
        digest.update(payload)
        if digest.hexdigest() != sha256:
            raise DataError(
                f"{path}: wrong checksum (SHA-256 of its contents is {digest.hexdigest()}, expected {sha256}); "
                f"the file is corrupt or not the standard MNIST (pass verify=False / --no-verify for other IDX data)"
            )
    return payload.reshape(dims)


# deflate inflates at most 1032:1: a header declaring more than that is not the file's content
_DEFLATE_MAX_RATIO = 1032


def _check_declared_size(path: Path, compressed: bool, dims: tuple, expected: int) -> None:
    """Refuse a header whose size the file cannot hold, before allocating or inflating anything."""
    on_disk = path.stat().st_size
    if not compressed:
        if on_disk != expected:
            raise DataError(f"{path}: wrong size, {on_disk} bytes where dimensions {dims} need {expected}; "
                            f"the file is truncated or corrupt")
        return
    recorded = _sizes_from_gzip_trailer(path)
    if expected > _DEFLATE_MAX_RATIO * on_disk or (recorded is not None and recorded != expected % (1 << 32)):
        raise DataError(
            f"{path}: cannot read: dimensions {dims} declare {expected} bytes, but the gzip file records "
            f"{recorded if recorded is not None else 'an unknown size'} (mod 2^32) and can hold at most "
            f"{_DEFLATE_MAX_RATIO * on_disk}; the file is corrupt or truncated, delete it and fetch it again"
        )
    try:
        require_memory(expected, f"{path} (dimensions {dims})")
    except MemoryError as exc:
        raise DataError(f"{exc}; is it really an IDX file of this data set?") from None


PART_SUFFIX = ".gz.part"
# a partial download untouched this long belongs to a process that died (a live one writes every few seconds)
STALE_PART_SECONDS = 600


def _remove_stale_parts(directory: Path) -> None:
    """Delete the partial files of downloads killed mid-way (a kill skips their own clean-up)."""
    import time

    for part in directory.glob(f".*{PART_SUFFIX}"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except FileNotFoundError:  # another process cleaned it up first
            pass


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
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _remove_stale_parts(directory)
    except OSError as exc:
        raise DataError(f"cannot write the MNIST cache {directory} ({exc.strerror or exc}); put the four files "
                        f"in a folder of your own and set FASTBP_DATA to it (or pass --data DIR)") from exc
    for name in _missing(directory, checksums):
        import urllib.error  # (only here: importing it costs a run that has the files 20 ms)
        import urllib.request

        errors = []
        for mirror in mirrors:
            url = f"{mirror.rstrip('/')}/{name}.gz"
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=PART_SUFFIX, dir=directory)
            except OSError as exc:
                raise DataError(f"cannot write into the MNIST cache {directory} ({exc.strerror or exc}); put the four "
                                f"files in a folder of your own and set FASTBP_DATA to it (or pass --data DIR)") from exc
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


CLASSES = 10


def _check_pair(directory: Path, images_name: str, images: np.ndarray, labels_name: str, labels: np.ndarray) -> None:
    """Images (N, rows, cols) and N labels in [0, 10), or a DataError naming the file."""
    if images.ndim != 3:
        raise DataError(f"{_file_in(directory, images_name)}: dimensions {images.shape}; images need 3 (count, rows, columns)")
    labels_file = _file_in(directory, labels_name)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{labels_file}: dimensions {labels.shape}, expected ({images.shape[0]},): one label per image "
                        f"of {_file_in(directory, images_name).name}")
    if labels.size and labels.max() >= CLASSES:
        bad = np.flatnonzero(labels >= CLASSES)
        raise DataError(f"{labels_file}: {bad.size} label(s) outside 0-{CLASSES - 1}, the first at index {bad[0]}: {labels[bad[0]]}")


def load_mnist(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False,
               data_dir=None, download: bool = True, verify: bool = True):
    """``(x_train, t_train), (x_test, t_test)``, as the seed's ``load_mnist`` returns them.

    normalize: float32 pixels in [0, 1] (else uint8 0..255). flatten: images as (N, 784)
    (else (N, 1, 28, 28)). one_hot_label: labels as (N, 10) float32 one-hot rows (else uint8).
    """
    directory = find_mnist(data_dir, download)
    sources = {name: _file_in(directory, name) for name in MNIST_FILES}
    arrays = decoded.load(sources, CHECKSUMS) if verify else None  # the verified copy of an earlier load
    if arrays is None:
        arrays = {name: read_idx(sources[name], sha256=sha if verify else None, shape=shape if verify else None)
                  for name, (sha, shape) in MNIST_FILES.items()}
        for split in ("train", "t10k"):  # checked by the checksums when verified; by structure always
            _check_pair(directory, f"{split}-images-idx3-ubyte", arrays[f"{split}-images-idx3-ubyte"],
                        f"{split}-labels-idx1-ubyte", arrays[f"{split}-labels-idx1-ubyte"])
        if verify:
            for name in IMAGES:
                arrays[name + NORMALIZED] = _normalized(arrays[name])
            decoded.store(sources, CHECKSUMS, arrays)

    def images(name):
        x = arrays[name]
        if normalize:
            x = arrays[name + NORMALIZED] if name + NORMALIZED in arrays else _normalized(x)
        return x.reshape(x.shape[0], -1) if flatten else x.reshape(x.shape[0], 1, *arrays[name].shape[1:])

    def labels(name):
        t = arrays[name]
        return np.eye(CLASSES, dtype=np.float32)[t] if one_hot_label else np.array(t)

    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte")), (
        images("t10k-images-idx3-ubyte"),
        labels("t10k-labels-idx1-ubyte"),
    )


IMAGES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
NORMALIZED = ".f32"  # the decoded copy's name for an image file's pixels as float32 in [0, 1]


def _normalized(pixels: np.ndarray) -> np.ndarray:
    """uint8 images (N, rows, cols) as float32 in [0, 1], (N, rows * cols)."""
    x = pixels.reshape(pixels.shape[0], -1).astype(np.float32)
    x /= 255.0  # in place: the float images exist once (188 MB for the training set)
    return x
