"""fastbp/_malloc.py: glibc's malloc keeps large freed arrays for the next call instead of giving
them back to the kernel (and faulting them in again), unless the user chose malloc's settings."""

import platform
import subprocess
import sys

import pytest

from fastbp import _malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# 14, 14 and 7 MB allocated and freed in turn, as the outputs of the book's ch07 convolution,
# ReLU and pooling layers: glibc's own thresholds give the top of the heap back every time
CHURN = r"""
import resource
import numpy as np
import fastbp  # noqa: F401  (its import sets the thresholds)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
counts = []
for _ in range(12):
    before = faults()
    a, b, c = np.ones(14 << 17), np.ones(14 << 17), np.ones(7 << 17)
    del a, b, c
    counts.append(faults() - before)
print(sum(counts[2:]))
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_large_arrays_freed_and_allocated_again_fault_no_pages_in():
    faults = int(subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True).stdout)
    # 35 MB a round is 8960 pages of 4 KiB: each round faulted again would count hundreds or more
    assert faults < 100


def test_a_users_own_malloc_settings_are_left_alone():
    assert not _malloc.wanted({"FASTBP_MALLOC": "system"})
    for name in _malloc.GLIBC_SETTINGS:
        assert not _malloc.wanted({name: "1000000"})
    assert _malloc.wanted({}) == GLIBC
