import numpy as np
import pytest

import fastbp

BACKENDS = fastbp.available_backends()
DTYPES = [np.float64, np.float32]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(autouse=True)
def _restore_global_backend():
    """Tests that change the global backend must not leak it into other tests."""
    before = fastbp.get_backend()
    yield
    fastbp.set_backend(before)
