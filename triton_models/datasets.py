"""Fixed train/test splits of the scikit-learn toy datasets behind the bundled models.

The build trains on these splits and the tests evaluate on the held-out halves, so
both sides see exactly the same rows. This module owns the split parameters
(``test_size``, stratification, seed) and the feature layout of each dataset; it
does not train or export anything. ``digits_png`` renders digit images as the PNG
bytes the image route decodes, for tests and examples.
"""

from __future__ import annotations

import io
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.datasets import load_digits, load_wine
from sklearn.model_selection import train_test_split

TEST_SIZE = 0.25
"""Fraction of each dataset held out for evaluation."""

SPLIT_SEED = 0
"""``random_state`` of every split; changing it changes every reported accuracy."""

DIGITS_SIDE = 8
"""Digit images are ``DIGITS_SIDE`` x ``DIGITS_SIDE`` pixels."""

DIGITS_MAX = 16
"""Largest pixel value of the digits dataset (0 is background, 16 full ink)."""

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


def digits_png(images: npt.ArrayLike, scale: int = 4) -> list[bytes]:
    """Render 8x8 digit images (pixel values 0..16) as 8-bit grayscale PNG files, one per image.

    ``images`` is one image (``[8, 8]`` or ``[64]``) or a batch (``[n, 8, 8]`` or
    ``[n, 64]``, row-major as in ``digits_split``). Each pixel becomes
    ``round(value * 255 / 16)`` and is upscaled to a ``scale`` x ``scale`` block
    (nearest neighbour), so a ``32x32`` PNG by default. Decoding, resizing back to
    8x8 (nearest or box filter) and mapping ``v * 16 / 255`` to the nearest integer
    gives the original integer pixel values back.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    array = np.asarray(images, dtype=np.float64)
    pixels = DIGITS_SIDE * DIGITS_SIDE
    if array.shape in ((pixels,), (DIGITS_SIDE, DIGITS_SIDE)):
        array = array.reshape(1, pixels)
    if array.ndim == 3 and array.shape[1:] == (DIGITS_SIDE, DIGITS_SIDE):
        array = array.reshape(len(array), pixels)
    if array.ndim != 2 or array.shape[1] != pixels:
        raise ValueError(f"expected images of shape [n, 64] or [n, 8, 8], got {list(np.shape(images))}")
    if not np.isfinite(array).all() or array.min(initial=0) < 0 or array.max(initial=0) > DIGITS_MAX:
        raise ValueError(f"pixel values must lie in 0..{DIGITS_MAX}")
    gray = np.rint(array * 255 / DIGITS_MAX).astype(np.uint8).reshape(-1, DIGITS_SIDE, DIGITS_SIDE)
    encoded = []
    for image in gray:
        upscaled = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        buffer = io.BytesIO()
        Image.fromarray(upscaled).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded
