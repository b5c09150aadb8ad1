"""The fixed dataset splits every model is trained and evaluated on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_wine

from switchyard.models.datasets import digits_png, digits_split, wine_split


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


def _decode_to_digit(png: bytes, resample: Image.Resampling) -> np.ndarray:
    """What the image route does: decode, resize to 8x8, scale 0..255 back to 0..16."""
    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("L").resize((8, 8), resample)
    return np.rint(np.asarray(small, dtype=np.float32) * 16 / 255).reshape(64)


@pytest.mark.parametrize("resample", [Image.Resampling.NEAREST, Image.Resampling.BOX])
def test_digits_png_round_trips_to_the_same_pixels(resample: Image.Resampling) -> None:
    images = digits_split().X_test[:50]
    pngs = digits_png(images)
    assert len(pngs) == len(images)
    for png, image in zip(pngs, images, strict=True):
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        np.testing.assert_array_equal(_decode_to_digit(png, resample), image)


def test_digits_png_is_grayscale_upscaled_by_nearest_neighbour() -> None:
    image = np.zeros((8, 8), np.float32)
    image[0, 0], image[2, 5], image[7, 7] = 16, 8, 1
    (png,) = digits_png(image, scale=3)
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (24, 24)
        pixels = np.asarray(decoded)
    np.testing.assert_array_equal(pixels[0:3, 0:3], 255)
    np.testing.assert_array_equal(pixels[6:9, 15:18], 128)  # 8 * 255 / 16 = 127.5, rounded
    np.testing.assert_array_equal(pixels[21:24, 21:24], 16)  # 255 / 16 = 15.94, rounded
    assert int(pixels.astype(np.int64).sum()) == 9 * (255 + 128 + 16)


def test_digits_png_accepts_batches_of_both_layouts_and_is_deterministic() -> None:
    images = digits_split().X_test[:3]
    flat = digits_png(images)
    assert digits_png(images.reshape(3, 8, 8)) == flat == digits_png(images)
    assert digits_png(images[0]) == flat[:1]
    with Image.open(io.BytesIO(digits_png(images, scale=1)[0])) as decoded:
        assert decoded.size == (8, 8)


@pytest.mark.parametrize(
    ("images", "scale", "message"),
    [
        (np.zeros((2, 63)), 4, r"expected images of shape \[n, 64\] or \[n, 8, 8\], got \[2, 63\]"),
        (np.full((1, 64), 17.0), 4, "pixel values must lie in 0..16"),
        (np.full((1, 64), -1.0), 4, "pixel values must lie in 0..16"),
        (np.full((1, 64), np.nan), 4, "pixel values must lie in 0..16"),
        (np.zeros((1, 64)), 0, "scale must be a positive integer, got 0"),
    ],
)
def test_digits_png_refuses_what_is_not_a_digit_image(images: np.ndarray, scale: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        digits_png(images, scale=scale)
