"""scikit-learn's handwritten digits: 1,797 real 8x8 grey images of 0-9, built in.

The split is fixed (`fixed_split` with `test_every=4`): within each class, in the
order of scikit-learn's file, every 4th image is a test image. That gives 1,352
training and 445 test images (43-45 test images per class), identical on every
machine and library version. Pixel values are 0..16 and are scaled by 1/16.
"""

from __future__ import annotations

import numpy as np

from ckatlas.data.image_data import RawImages
from ckatlas.data.subsets import fixed_split

DIGITS_SCALE = 16.0  # pixel values are integers 0..16
DIGITS_TEST_EVERY = 4


def read_digits() -> RawImages:
    """The digits as `(N, 1, 8, 8)` float32 arrays with values 0..16, split as documented."""
    from sklearn.datasets import load_digits  # ships with scikit-learn; nothing is downloaded

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[:, None]  # (1797, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    train, test = (idx.numpy() for idx in fixed_split(y, DIGITS_TEST_EVERY))
    return RawImages(x[train], y[train], x[test], y[test], tuple(str(i) for i in range(10)))


__all__ = ["DIGITS_SCALE", "DIGITS_TEST_EVERY", "read_digits"]
