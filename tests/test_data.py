"""The MNIST loader: search order, structure and checksum checks, downloads, and real MNIST's facts."""

import gzip
import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from fastbp import data
from fastbp.data import DataError, download_mnist, find_mnist, load_mnist, read_idx
from mnist import idx_bytes, write_tiny_mnist

NAMES = list(data.MNIST_FILES)


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTBP_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_shapes_and_options(tmp_path, gz):
    raw = write_tiny_mnist(tmp_path, gz=gz)
    (x, t), (xt, tt) = load_mnist(data_dir=tmp_path, verify=False)
    assert x.shape == (6, 784) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert t.dtype == np.uint8 and t.tolist() == [0, 1, 2, 3, 4, 5]
    assert xt.shape == (4, 784) and tt.tolist() == [3, 4, 5, 6]
    expected = np.frombuffer(raw["train-images-idx3-ubyte"], np.uint8, offset=16).reshape(6, 784)
    np.testing.assert_array_equal(x, expected.astype(np.float32) / 255)
    (x, t), _ = load_mnist(data_dir=tmp_path, verify=False, normalize=False, flatten=False, one_hot_label=True)
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(t, np.eye(10)[[0, 1, 2, 3, 4, 5]])


def test_read_idx_rejects_wrong_magic(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=rf"{path}: wrong magic number 00000d01"):
        read_idx(path)


def test_read_idx_rejects_truncated_and_oversized_files(tmp_path):
    good = idx_bytes(np.zeros((3, 2, 2)))
    for name, content in (("short", good[:-1]), ("long", good + b"\x00")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError, match=rf"{path}: wrong size, {len(content)} bytes where dimensions \(3, 2, 2\) need 28"):
            read_idx(path)


def test_read_idx_rejects_broken_gzip(tmp_path):
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100)))[:-10])
    with pytest.raises(DataError, match=rf"{path}: cannot read"):
        read_idx(path)


def test_read_idx_checks_checksum_and_shape(tmp_path):
    content = idx_bytes(np.arange(10))
    path = tmp_path / "f"
    path.write_bytes(content)
    np.testing.assert_array_equal(read_idx(path, sha256=hashlib.sha256(content).hexdigest()), np.arange(10))
    with pytest.raises(DataError, match="wrong checksum"):
        read_idx(path, sha256="0" * 64)
    with pytest.raises(DataError, match=r"dimensions \(10,\), expected \(60000,\)"):
        read_idx(path, shape=(60000,))


def test_verified_load_rejects_files_that_are_not_mnist(tmp_path):
    write_tiny_mnist(tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: dimensions"):
        load_mnist(data_dir=tmp_path)


def test_explicit_directory_must_hold_the_files(tmp_path, no_env):
    with pytest.raises(DataError, match=r"named by the data_dir argument.*missing train-images-idx3-ubyte"):
        find_mnist(tmp_path)


def test_fastbp_data_must_hold_the_files(tmp_path, no_env, monkeypatch):
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="FASTBP_DATA environment variable"):
        find_mnist()
    write_tiny_mnist(tmp_path / "here")
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "here"))
    assert find_mnist() == tmp_path / "here"


def test_cache_directory_is_used(tmp_path, no_env):
    write_tiny_mnist(tmp_path / "cache" / "fastbp" / "mnist")
    assert find_mnist(download=False) == tmp_path / "cache" / "fastbp" / "mnist"


def test_offline_without_a_copy_says_where_it_looked_and_how_to_fix_it(no_env, tmp_path):
    with pytest.raises(DataError, match=r"(?s)FASTBP_DATA is not set, the cache .* downloads are disabled.*Fix: set FASTBP_DATA"):
        find_mnist(download=False)


class _Server:
    """A loopback HTTP server for a folder: a stand-in for the MNIST mirrors."""

    def __init__(self, root: Path):
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    raw = write_tiny_mnist(root)
    server = _Server(root)
    yield server, {name: hashlib.sha256(content).hexdigest() for name, content in raw.items()}, root
    server.close()


def test_download_verifies_and_falls_back_to_the_next_mirror(tmp_path, mirror):
    server, checksums, _ = mirror
    dest = tmp_path / "dest"
    download_mnist(dest, mirrors=[server.url + "missing/", server.url], checksums=checksums, timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    (x, _), _ = load_mnist(data_dir=dest, verify=False)
    assert x.shape == (6, 784)


def test_corrupt_download_is_rejected_and_leaves_nothing_behind(tmp_path, mirror):
    server, checksums, root = mirror
    bad = dict(checksums, **{"t10k-labels-idx1-ubyte": "f" * 64})
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"(?s)could not download t10k-labels-idx1-ubyte.*wrong checksum"):
        download_mnist(dest, mirrors=[server.url], checksums=bad, timeout=5)
    left = sorted(p.name for p in dest.iterdir())
    assert "t10k-labels-idx1-ubyte.gz" not in left and not any(name.endswith(".part") for name in left)


def test_unreachable_mirror_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download train-images-idx3-ubyte"):
        download_mnist(tmp_path, mirrors=["http://127.0.0.1:9/"], timeout=2)


@pytest.mark.skipif(not os.environ.get("FASTBP_DATA"), reason="real MNIST: set FASTBP_DATA (CI does)")
def test_real_mnist_facts():
    (x, t), (xt, tt) = load_mnist()
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert np.bincount(t).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert t[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert tt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert float(x.mean()) * 255 == pytest.approx(33.318, abs=1e-3)


def gzip_bomb(path: Path, header_dims, payload_bytes: int) -> None:
    """An IDX header followed by far more zeros than it declares, gzipped (a few KB on disk)."""
    header = bytes([0, 0, 0x08, len(header_dims)]) + b"".join(int(d).to_bytes(4, "big") for d in header_dims)
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        zeros = bytes(1 << 20)
        for _ in range(payload_bytes >> 20):
            f.write(zeros)


def test_a_gzip_bomb_is_refused_without_inflating_it(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, (6, 28, 28), 256 << 20)  # 256 MiB of zeros behind a header declaring 4.7 KB
    assert path.stat().st_size < 1 << 20
    inflated = []
    real_readinto = gzip.GzipFile.readinto
    monkeypatch.setattr(gzip.GzipFile, "readinto", lambda self, b: inflated.append(len(b)) or real_readinto(self, b))
    with pytest.raises(DataError, match=rf"{path}: cannot read: dimensions \(6, 28, 28\) declare 4720 bytes"):
        read_idx(path)
    assert inflated == []  # refused from the header and the gzip trailer, before any payload
    # a header that agrees with the trailer but declares more than deflate can hold in this file
    big = tmp_path / "big.gz"
    gzip_bomb(big, (1 << 16, 1 << 16), 0)
    with pytest.raises(DataError, match="can hold at most"):
        read_idx(big)


def test_a_file_that_inflates_past_its_header_is_refused_reading_no_more(tmp_path):
    path = tmp_path / "f.gz"
    content = idx_bytes(np.zeros((3, 2, 2))) + bytes(64)
    # a multi-member gzip whose last member records the declared size (28): only reading tells the truth
    path.write_bytes(gzip.compress(content[:-28]) + gzip.compress(content[-28:]))
    with pytest.raises(DataError, match=r"wrong size, more than 28 bytes where dimensions \(3, 2, 2\) need 28"):
        read_idx(path)


def test_unverified_files_with_impossible_headers_name_the_file(tmp_path):
    write_tiny_mnist(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros((4, 784)))))  # 2-D images
    with pytest.raises(DataError, match=rf"{bad}: dimensions \(4, 784\); images need 3"):
        load_mnist(data_dir=tmp_path, verify=False)
    write_tiny_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.arange(5) % 10)))  # 5 labels for 4 images
    with pytest.raises(DataError, match=rf"{labels}: dimensions \(5,\), expected \(4,\)"):
        load_mnist(data_dir=tmp_path, verify=False)


def test_unverified_labels_out_of_range_name_the_file(tmp_path):
    write_tiny_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 200, 3, 4, 5]))))
    for one_hot in (False, True):
        with pytest.raises(DataError, match=rf"{labels}: 1 label\(s\) outside 0-9, the first at index 2: 200"):
            load_mnist(data_dir=tmp_path, verify=False, one_hot_label=one_hot)


def test_stale_partial_downloads_are_removed(tmp_path, mirror):
    server, checksums, _ = mirror
    dest = tmp_path / "dest"
    dest.mkdir()
    stale, fresh = dest / ".train-images-idx3-ubyte.abc.gz.part", dest / ".t10k-images-idx3-ubyte.def.gz.part"
    stale.write_bytes(b"")  # left by a download killed mid-way
    fresh.write_bytes(b"")  # another process's download in progress
    old = stale.stat().st_mtime - data.STALE_PART_SECONDS - 1
    os.utime(stale, (old, old))
    download_mnist(dest, mirrors=[server.url], checksums=checksums, timeout=5)
    assert not stale.exists() and fresh.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_says_where_to_put_the_files(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        with pytest.raises(DataError, match=r"cannot write .*set FASTBP_DATA"):
            download_mnist(cache / "mnist", mirrors=["http://127.0.0.1:9/"], timeout=2)
    finally:
        cache.chmod(0o700)


def test_a_cache_under_a_file_says_where_to_put_the_files(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match=rf"cannot write the MNIST cache {blocker / 'mnist'}.*set FASTBP_DATA"):
        download_mnist(blocker / "mnist", mirrors=["http://127.0.0.1:9/"], timeout=2)


@pytest.fixture
def verified_tiny(tmp_path, monkeypatch):
    """A tiny MNIST that verifies: its own checksums and shapes stand in for MNIST's."""
    raw = write_tiny_mnist(tmp_path / "tiny")
    files = {name: (hashlib.sha256(content).hexdigest(), tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big")
                                                             for i in range(content[3])))
             for name, content in raw.items()}
    monkeypatch.setattr(data, "MNIST_FILES", files)
    monkeypatch.setattr(data, "CHECKSUMS", {name: sha for name, (sha, _) in files.items()})
    return tmp_path / "tiny"


def test_a_verified_load_keeps_a_decoded_copy_that_the_next_load_reads(verified_tiny, monkeypatch):
    (x, t), (xt, tt) = load_mnist(data_dir=verified_tiny)
    monkeypatch.setattr(data, "read_idx", lambda *a, **k: pytest.fail("the decoded copy was not used"))
    for normalize, flatten, one_hot in ((True, True, False), (False, False, True)):
        (x2, t2), (xt2, tt2) = load_mnist(data_dir=verified_tiny, normalize=normalize, flatten=flatten,
                                           one_hot_label=one_hot)
        expected = x if normalize else np.round(x * 255).astype(np.uint8)
        np.testing.assert_array_equal(x2.reshape(x.shape), expected)
        assert x2.shape == ((6, 784) if flatten else (6, 1, 28, 28)) and x2.dtype == (np.float32 if normalize else np.uint8)
        np.testing.assert_array_equal(np.argmax(t2, axis=1) if one_hot else t2, t)
    x2[0, 0, 0, 0] = 7  # copy-on-write: the arrays are the caller's, the files stay as they were
    (x3, _), _ = load_mnist(data_dir=verified_tiny, normalize=False, flatten=False)
    assert x3[0, 0, 0, 0] == np.round(x[0, 0] * 255)


def test_a_changed_source_file_is_verified_again(verified_tiny):
    load_mnist(data_dir=verified_tiny)
    labels = verified_tiny / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.array([9, 9, 9, 9, 9, 9]))))  # other content, same shape
    with pytest.raises(DataError, match="wrong checksum"):
        load_mnist(data_dir=verified_tiny)


def test_unverified_loads_keep_no_copy(tmp_path):
    write_tiny_mnist(tmp_path / "tiny")
    load_mnist(data_dir=tmp_path / "tiny", verify=False)
    sources = {name: data._file_in(tmp_path / "tiny", name) for name in data.MNIST_FILES}
    assert not data.decoded._folder_for(sources).exists()
