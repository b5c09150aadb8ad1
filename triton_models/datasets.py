"""Fixed train/test splits of the scikit-learn toy datasets behind the bundled models.

The build trains on these splits and the tests evaluate on the held-out halves, so
both sides see exactly the same rows. This module owns the split parameters
(``test_size``, stratification, seed) and the feature layout of each dataset; it
does not train or export anything.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from sklearn.datasets import load_digits, load_wine
from sklearn.model_selection import train_test_split

TEST_SIZE = 0.25
"""Fraction of each dataset held out for evaluation."""

SPLIT_SEED = 0
"""``random_state`` of every split; changing it changes every reported accuracy."""

WINE_ALCOHOL_COLUMN = 0
"""Column of ``load_wine().data`` holding alcohol, the regression target."""

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]


class DigitsSplit(NamedTuple):
    """8x8 digit images flattened to 64 raw pixel values (0..16) and their labels 0..9."""

    X_train: Float32Array
    X_test: Float32Array
    y_train: Int64Array
    y_test: Int64Array


class WineSplit(NamedTuple):
    """The 12 wine measurements other than alcohol, the cultivar class, and alcohol."""

    X_train: Float32Array
    X_test: Float32Array
    y_train: Int64Array
    y_test: Int64Array
    alcohol_train: Float32Array
    alcohol_test: Float32Array


def digits_split() -> DigitsSplit:
    """Return the stratified 75/25 split of the digits dataset (1347 train, 450 test rows)."""
    data = load_digits()
    X = np.asarray(data.data, dtype=np.float32)
    y = np.asarray(data.target, dtype=np.int64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    return DigitsSplit(X_train, X_test, y_train, y_test)


def wine_split() -> WineSplit:
    """Return the stratified 75/25 split of the wine dataset (133 train, 45 test rows).

    ``X`` holds the 12 features that follow alcohol in ``load_wine().data``; alcohol is
    split alongside as the regression target.
    """
    data = load_wine()
    raw = np.asarray(data.data, dtype=np.float32)
    X = np.delete(raw, WINE_ALCOHOL_COLUMN, axis=1)
    alcohol = raw[:, WINE_ALCOHOL_COLUMN].copy()
    y = np.asarray(data.target, dtype=np.int64)
    X_train, X_test, y_train, y_test, alcohol_train, alcohol_test = train_test_split(
        X, y, alcohol, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return WineSplit(X_train, X_test, y_train, y_test, alcohol_train, alcohol_test)
