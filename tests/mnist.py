"""Real MNIST for the tests that need it: from FASTBP_DATA, which CI sets; skipped without it."""

import os

import pytest

requires_mnist = pytest.mark.skipif(not os.environ.get("FASTBP_DATA"), reason="real MNIST: set FASTBP_DATA (CI does)")
