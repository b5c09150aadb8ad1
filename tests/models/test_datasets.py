"""The fixed dataset splits every model is trained and evaluated on."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_wine

from switchyard.models.datasets import digits_split, wine_split


def test_digits_split_shapes_and_dtypes() -> None:
    split = digits_split()
    assert split.X_train.shape == (1347, 64) and split.X_test.shape == (450, 64)
    assert split.X_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert split.y_test.shape == (450,)
    assert split.X_test.min() >= 0 and split.X_test.max() <= 16


def test_digits_split_is_stratified_and_fixed() -> None:
    first, second = digits_split(), digits_split()
    for name in first._fields:
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    train_share = np.bincount(first.y_train) / len(first.y_train)
    test_share = np.bincount(first.y_test) / len(first.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)


def test_wine_split_separates_alcohol_from_the_features() -> None:
    split = wine_split()
    assert split.X_train.shape == (133, 12) and split.X_test.shape == (45, 12)
    assert split.X_train.dtype == np.float32 and split.alcohol_train.dtype == np.float32
    assert split.y_test.dtype == np.int64 and split.alcohol_test.shape == (45,)
    raw = load_wine().data.astype(np.float32)
    rows = np.concatenate([split.X_train, split.X_test])
    alcohol = np.concatenate([split.alcohol_train, split.alcohol_test])
    # Every row is a wine's 12 non-alcohol measurements, and its alcohol travels with it.
    by_features = {row.tobytes(): a for row, a in zip(raw[:, 1:], raw[:, 0], strict=True)}
    assert all(by_features[row.tobytes()] == a for row, a in zip(rows, alcohol, strict=True))
    np.testing.assert_allclose(
        np.bincount(split.y_test) / len(split.y_test), np.bincount(split.y_train) / len(split.y_train), atol=0.03
    )
