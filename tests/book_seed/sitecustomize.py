"""Seeds NumPy's global generator before one of the book's scripts runs (tests/book.py puts this
directory on PYTHONPATH with FASTBP_BOOK_SEED), so that its unseeded draws are the same in a run
with fastbp's layers and a run with the book's own."""

import os

if os.environ.get("FASTBP_BOOK_SEED"):
    import numpy as np

    np.random.seed(int(os.environ["FASTBP_BOOK_SEED"]))
