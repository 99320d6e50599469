"""Large arrays reused without page faults (glibc's malloc).

The book's layers return a new array every call, and the convnets' are large: in its ch07 loop
(batch 100, float64) the convolution, ReLU and pooling outputs are 3.5-13.8 MB each, freed a few
calls later. glibc hands the top of its heap back to the kernel once more than twice its (dynamic)
mmap threshold lies free there, so each iteration faulted the same pages in again: 100-180 page
faults in each of those layers a call, and about a third of the convolution's forward time.
fastbp raises both thresholds when it is imported: arrays up to MMAP_THRESHOLD come from the heap,
which keeps up to TRIM_THRESHOLD free at its top for the next call. The cost is memory the process
keeps after freeing it (at most TRIM_THRESHOLD at the heap's top).

Measured on the 2-core machine, the book's ch07 loop with fastbp's layers (iterations 6-60 of a
run, four runs alternated): 23.9-27.2 ms an iteration with glibc's thresholds, 20.4-21.0 with
these; the convolution's forward 5.2-5.7 -> 2.9-3.0 ms, pooling backward 3.0-3.4 -> 1.3-1.5 ms.

A user's own choice is left alone: any of glibc's MALLOC_*_ variables set, or FASTBP_MALLOC=system.
"""

from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit machines
TRIM_THRESHOLD = 256 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
GLIBC_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def wanted(environ=os.environ) -> bool:
    """Whether fastbp sets the thresholds: on glibc, unless the user chose malloc's settings."""
    if environ.get("FASTBP_MALLOC") == "system" or any(name in environ for name in GLIBC_SETTINGS):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


configured = False  # whether configure_malloc set the thresholds (fastbp info says so)


def configure_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (see above); True when they were set."""
    global configured
    if not wanted():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mmap first: setting either turns glibc's dynamic thresholds off, and a trim threshold above
    # the default mmap threshold alone would send every large array to mmap
    configured = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return configured
