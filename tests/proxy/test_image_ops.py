"""Image and post-processing ops: results against independent references, spec checks, bad params, bad inputs.

Every op runs on NumPy, and on CuPy where a GPU exists (skipped otherwise);
``test_cupy_matches_numpy`` runs each op on both and compares.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from switchyard.proxy.errors import ConfigError, GatewayError, InvalidInput
from switchyard.proxy.ops import OpTypeError, build_op, image_ops
from switchyard.proxy.ops.array_module import to_device, to_host
from switchyard.proxy.tensor_spec import TensorSpec

from .array_modules import CUPY, MODULES

rng = np.random.default_rng(11)
# scikit-learn's 8x8 digits (values 0..16), brought to 0..255 grayscale.
DIGITS = (load_digits().images[:6] * 255 / 16).round().astype(np.uint8)


def run(name: str, params: dict, arrays: dict, xp: ModuleType) -> dict:
    op = build_op(name, params, "test")
    out = op.apply({k: (v if v.dtype == object else to_device(v, xp)) for k, v in arrays.items()}, xp)
    return {k: to_host(v) for k, v in out.items()}


def encode(pixels: np.ndarray, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def blobs(*payloads: bytes) -> np.ndarray:
    return np.array(list(payloads), dtype=np.object_)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` grayscale pixels but carries almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bilinear_reference(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow's bilinear resize, channel by channel in float mode "F" (no rounding); exact for enlarging."""
    channels = image[..., None] if image.ndim == 2 else image
    planes = [
        np.asarray(
            Image.fromarray(channels[..., c].astype(np.float32), mode="F").resize((width, height), Image.BILINEAR)
        )
        for c in range(channels.shape[-1])
    ]
    out = np.stack(planes, axis=-1)
    return out[..., 0] if image.ndim == 2 else out


# ---------------------------------------------------------------- decode_image


@pytest.mark.parametrize("xp", MODULES)
def test_decode_png_grayscale_and_rgb_round_trip(xp: ModuleType) -> None:
    payloads = blobs(*(encode(d) for d in DIGITS))
    gray = run("decode_image", {"tensor": "img", "channels": 1, "size": [8, 8]}, {"img": payloads}, xp)["img"]
    assert gray.dtype == np.uint8 and gray.shape == (6, 8, 8, 1)
    np.testing.assert_array_equal(gray[..., 0], DIGITS)
    rgb = run("decode_image", {"tensor": "img", "channels": 3, "size": [8, 8]}, {"img": payloads[:, None]}, xp)["img"]
    assert rgb.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(rgb, np.repeat(DIGITS[..., None], 3, axis=-1))


@pytest.mark.parametrize("xp", MODULES)
def test_decode_resizes_every_image_to_size(xp: ModuleType) -> None:
    small = encode(DIGITS[0])
    large = encode(rng.integers(0, 256, size=(20, 12, 3), dtype=np.uint8))
    out = run("decode_image", {"tensor": "img", "channels": 1, "size": [16, 16]}, {"img": blobs(small, large)}, xp)
    assert out["img"].shape == (2, 16, 16, 1)
    # Enlarging with Pillow's bilinear filter is plain bilinear interpolation: matches the resize op up to rounding.
    ours = run("resize", {"tensor": "x", "size": [16, 16]}, {"x": DIGITS[:1]}, np)["x"]
    assert np.abs(out["img"][0, ..., 0].astype(np.float32) - ours[0]).max() <= 1.0


@pytest.mark.parametrize("xp", MODULES)
def test_decode_jpeg(xp: ModuleType) -> None:
    pixels = np.kron(DIGITS[1], np.ones((4, 4), np.uint8))  # 32x32
    rgb = np.stack([pixels, 255 - pixels, pixels // 2], axis=-1)
    data = encode(rgb, "JPEG", quality=95, subsampling=0)  # no chroma subsampling: close to the original
    out = run("decode_image", {"tensor": "img", "channels": 3, "size": [32, 32]}, {"img": blobs(data)}, xp)["img"]
    np.testing.assert_array_equal(out[0], np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    assert np.abs(out[0].astype(int) - rgb).mean() < 2.0


@pytest.mark.parametrize("xp", MODULES)
def test_decode_empty_batch(xp: ModuleType) -> None:
    out = run("decode_image", {"tensor": "img", "channels": 3, "size": [4, 5]}, {"img": blobs()}, xp)["img"]
    assert out.shape == (0, 4, 5, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"definitely not an image", "not a decodable PNG/JPEG image"),
        (b"", "not a decodable PNG/JPEG image"),
        (encode(DIGITS[0])[:40], "not a decodable PNG/JPEG image"),  # truncated pixel data
        (encode(DIGITS[0], "GIF"), "not a decodable PNG/JPEG image"),  # a real image, format not accepted
        (forged_png(5000, 5000), "image is 5000x5000, more than max_pixels=16777216 pixels"),
        (forged_png(100_000, 100_000), "more than max_pixels=16777216 pixels"),  # past Pillow's own limit too
    ],
    ids=["garbage", "empty", "truncated", "gif", "bomb", "huge-bomb"],
)
def test_decode_rejects_bad_payloads_with_invalid_input(payload: bytes, reason: str) -> None:
    arrays = {"img": blobs(encode(DIGITS[0]), payload)}
    with pytest.raises(InvalidInput) as info:
        run("decode_image", {"tensor": "img", "channels": 1, "size": [8, 8]}, arrays, np)
    assert info.value.field == "inputs[img][1]"
    assert reason in info.value.reason


def test_decode_checks_max_pixels_before_decoding() -> None:
    # The forged header would fail to decode; the size check must come first.
    with pytest.raises(InvalidInput, match="image is 100x100, more than max_pixels=9999 pixels"):
        run(
            "decode_image",
            {"tensor": "i", "channels": 1, "size": [8, 8], "max_pixels": 9999},
            {"i": blobs(forged_png(100, 100))},
            np,
        )
    params = {"tensor": "i", "channels": 1, "size": [8, 8], "max_pixels": 63}
    with pytest.raises(InvalidInput, match="image is 8x8"):
        run("decode_image", params, {"i": blobs(encode(DIGITS[0]))}, np)


def test_decode_rejects_non_bytes_elements() -> None:
    with pytest.raises(InvalidInput, match="expected the bytes of an encoded image"):
        run("decode_image", {"tensor": "i", "channels": 1, "size": [8, 8]}, {"i": np.array([3], dtype=object)}, np)


# ---------------------------------------------------------------------- resize


@pytest.mark.parametrize("xp", MODULES)
@pytest.mark.parametrize(("height", "width"), [(16, 16), (13, 21), (8, 8), (24, 9)])
def test_resize_up_matches_pillow_bilinear(xp: ModuleType, height: int, width: int) -> None:
    images = rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)
    out = run("resize", {"tensor": "x", "size": [height, width]}, {"x": images}, xp)["x"]
    assert out.dtype == np.float32 and out.shape == (3, height, width, 3)
    for got, image in zip(out, images, strict=True):
        np.testing.assert_allclose(got, bilinear_reference(image, height, width), atol=1e-3)


@pytest.mark.parametrize("xp", MODULES)
def test_resize_grayscale_without_channel_axis(xp: ModuleType) -> None:
    out = run("resize", {"tensor": "x", "size": [20, 12]}, {"x": DIGITS}, xp)["x"]
    assert out.shape == (6, 20, 12)
    for got, image in zip(out, DIGITS, strict=True):
        np.testing.assert_allclose(got, bilinear_reference(image, 20, 12), atol=1e-3)


@pytest.mark.parametrize("xp", MODULES)
def test_resize_down_by_two_averages_pixel_pairs(xp: ModuleType) -> None:
    # Half-pixel centres: halving samples exactly between two pixels, i.e. 2x2 mean pooling.
    images = rng.normal(size=(2, 6, 8, 2)).astype(np.float64)
    out = run("resize", {"tensor": "x", "size": [3, 4]}, {"x": images}, xp)["x"]
    pooled = images.reshape(2, 3, 2, 4, 2, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, pooled, rtol=1e-5, atol=1e-6)


def test_resize_hand_computed() -> None:
    image = np.array([[[0, 10], [20, 30]]], dtype=np.uint8)  # 1 x 2 x 2
    out = run("resize", {"tensor": "x", "size": [4, 4]}, {"x": image}, np)["x"][0]
    # Source coordinates of the 4 outputs per axis: -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
    column = np.array([0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(out, 20 * column[:, None] + 10 * column[None, :], rtol=1e-6)


@pytest.mark.parametrize("xp", MODULES)
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("resize", {"size": [5, 7]}),
        ("resize", {"size": [8, 6]}),  # the input's own size: every tap is a whole pixel
        ("normalize", {"mean": [0.5, 1.0, 2.0], "std": [2.0, 3.0, 4.0]}),
        ("normalize", {"scale": 0.5, "mean": 0.0, "std": 1.0}),
    ],
)
def test_ops_computing_in_place_leave_their_input_alone(xp: ModuleType, name: str, params: dict) -> None:
    # resize and normalize change their FP32 working arrays in place; an FP32 input must never be one of them.
    image = rng.normal(size=(2, 8, 6, 3)).astype(np.float32)
    device = to_device(image.copy(), xp)
    op = build_op(name, {"tensor": "x", "output": "y", **params}, "test")
    out = op.apply({"x": device}, xp)
    assert out["x"] is device
    np.testing.assert_array_equal(to_host(device), image)
    assert out["y"].shape[0] == 2


def test_by_chunks_slices_a_numpy_batch_and_passes_others_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_ops, "CHUNK_BYTES", 100)
    seen: list[int] = []

    def double(part: np.ndarray) -> np.ndarray:
        seen.append(len(part))
        return part * 2

    batch = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    out = image_ops.by_chunks(batch, 40, np, double)  # 100 // 40: two rows per slice
    np.testing.assert_array_equal(out, batch * 2)
    assert seen == [2, 2, 1] and out.dtype == np.float32
    seen.clear()
    image_ops.by_chunks(batch, 20, np, double)  # five rows fit in one slice
    image_ops.by_chunks(batch, 4000, ModuleType("not_numpy"), double)  # another array module: never sliced
    assert seen == [5, 5]


@pytest.mark.parametrize(
    ("name", "params", "images"),
    [
        ("resize", {"size": [7, 5]}, rng.integers(0, 256, size=(5, 9, 11, 3), dtype=np.uint8)),
        ("resize", {"size": [12, 4]}, rng.normal(size=(4, 6, 8)).astype(np.float64)),
        ("normalize", {"scale": 0.5, "mean": [0.1, 0.2, 0.3], "std": [1.5, 2.0, 0.5]}, rng.normal(size=(5, 4, 6, 3))),
        ("normalize", {"mean": 3.0, "std": 2.0}, rng.integers(0, 256, size=(3, 5, 5), dtype=np.uint8)),
    ],
)
def test_ops_give_the_same_bits_slice_by_slice(
    monkeypatch: pytest.MonkeyPatch, name: str, params: dict, images: np.ndarray
) -> None:
    whole = run(name, {"tensor": "x", **params}, {"x": images}, np)["x"]
    monkeypatch.setattr(image_ops, "CHUNK_BYTES", 1)  # one image per slice
    sliced = run(name, {"tensor": "x", **params}, {"x": images}, np)["x"]
    assert sliced.dtype == whole.dtype == np.float32 and sliced.shape == whole.shape
    np.testing.assert_array_equal(sliced, whole)


def test_resize_rejects_an_empty_image() -> None:
    with pytest.raises(InvalidInput, match="cannot resize an empty image"):
        run("resize", {"tensor": "x", "size": [2, 2]}, {"x": np.zeros((1, 0, 4), np.uint8)}, np)


# ----------------------------------------------------------------- center_crop


@pytest.mark.parametrize("xp", MODULES)
def test_center_crop(xp: ModuleType) -> None:
    images = np.arange(2 * 7 * 6 * 3, dtype=np.int16).reshape(2, 7, 6, 3)
    out = run("center_crop", {"tensor": "x", "output": "c", "size": [4, 3]}, {"x": images}, xp)
    # (7 - 4) // 2 = 1 rows off the top, (6 - 3) // 2 = 1 column off the left.
    np.testing.assert_array_equal(out["c"], images[:, 1:5, 1:4, :])
    assert out["c"].dtype == np.int16
    np.testing.assert_array_equal(out["x"], images)
    gray = run("center_crop", {"tensor": "x", "size": [8, 8]}, {"x": DIGITS}, xp)["x"]
    np.testing.assert_array_equal(gray, DIGITS)


def test_center_crop_rejects_a_small_image() -> None:
    with pytest.raises(InvalidInput, match="image is 8x8, smaller than the 9x4 crop"):
        run("center_crop", {"tensor": "x", "size": [9, 4]}, {"x": DIGITS}, np)


# ------------------------------------------------------------------- normalize


@pytest.mark.parametrize("xp", MODULES)
def test_normalize_per_channel(xp: ModuleType) -> None:
    images = rng.integers(0, 256, size=(2, 4, 5, 3), dtype=np.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    params = {"tensor": "x", "mean": mean, "std": std, "scale": 1 / 255}
    out = run("normalize", params, {"x": images}, xp)["x"]
    expected = (images.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("xp", MODULES)
def test_normalize_single_numbers(xp: ModuleType) -> None:
    out = run("normalize", {"tensor": "x", "mean": 8, "std": 4.0}, {"x": DIGITS}, xp)["x"]
    np.testing.assert_allclose(out, (DIGITS.astype(np.float64) - 8) / 4, rtol=1e-6)


def test_normalize_rejects_a_channel_count_it_was_not_given() -> None:
    with pytest.raises(InvalidInput, match="has 1 channels"):
        run("normalize", {"tensor": "x", "mean": [0, 0, 0], "std": [1, 1, 1]}, {"x": np.zeros((1, 2, 2, 1))}, np)


# ---------------------------------------------------------------------- layout


@pytest.mark.parametrize("xp", MODULES)
def test_layout_round_trip(xp: ModuleType) -> None:
    images = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
    chw = run("layout", {"tensor": "x", "order": "HWC->CHW"}, {"x": images}, xp)["x"]
    assert chw.shape == (2, 3, 4, 5)
    for c in range(3):
        np.testing.assert_array_equal(chw[:, c], images[..., c])
    back = run("layout", {"tensor": "x", "order": "CHW->HWC"}, {"x": chw}, xp)["x"]
    np.testing.assert_array_equal(back, images)


# ------------------------------------------------------------------- threshold


@pytest.mark.parametrize("xp", MODULES)
def test_threshold(xp: ModuleType) -> None:
    scores = np.array([[0.1, 0.5, 0.7, np.nan], [0.49999, 1.0, -3.0, 0.5]], dtype=np.float32)
    out = run("threshold", {"tensor": "p", "output": "y", "value": 0.5}, {"p": scores}, xp)["y"]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 1, 1, 0], [0, 1, 0, 1]])
    flags = run("threshold", {"tensor": "p", "value": 0.5, "datatype": "BOOL"}, {"p": scores}, xp)["p"]
    assert flags.dtype == np.bool_
    np.testing.assert_array_equal(flags, out.astype(bool))


@pytest.mark.parametrize("xp", MODULES)
def test_threshold_is_exact_for_every_type(xp: ModuleType) -> None:
    # float32(0.1) is above 0.1; the largest float32 below it is still >= 0.1 only if it really is.
    below = np.nextafter(np.float32(0.1), np.float32(0))
    scores = np.array([[below, np.float32(0.1)]], dtype=np.float32)
    out = run("threshold", {"tensor": "p", "value": 0.1}, {"p": scores}, xp)["p"]
    np.testing.assert_array_equal(out, [[float(below) >= 0.1, float(np.float32(0.1)) >= 0.1]])
    counts = np.array([[0, 1, 2, 255]], dtype=np.uint8)
    assert run("threshold", {"tensor": "c", "value": 1.5}, {"c": counts}, xp)["c"].tolist() == [[0, 0, 1, 1]]
    assert run("threshold", {"tensor": "c", "value": -7}, {"c": counts}, xp)["c"].tolist() == [[1, 1, 1, 1]]
    assert run("threshold", {"tensor": "c", "value": 300}, {"c": counts}, xp)["c"].tolist() == [[0, 0, 0, 0]]
    half = np.array([[0.0, 1e4, np.inf]], dtype=np.float16)
    assert run("threshold", {"tensor": "h", "value": 1e6}, {"h": half}, xp)["h"].tolist() == [[0, 0, 1]]
    flags = np.array([[True, False]])
    assert run("threshold", {"tensor": "b", "value": 0.5}, {"b": flags}, xp)["b"].tolist() == [[1, 0]]


# ------------------------------------------------------------------ topk labels


LABELS = ["zero", "one", "two", "three"]


@pytest.mark.parametrize("xp", MODULES)
def test_topk_with_labels(xp: ModuleType) -> None:
    scores = np.array([[0.1, 0.5, 0.5, 0.2], [0.9, 0.0, 0.05, 0.05]], dtype=np.float32)
    out = run("topk", {"tensor": "s", "k": 3, "output": "best", "labels": LABELS}, {"s": scores}, xp)
    np.testing.assert_array_equal(out["best_indices"], [[1, 2, 3], [0, 2, 3]])
    assert out["best_labels"].dtype == object
    assert out["best_labels"].tolist() == [[b"one", b"two", b"three"], [b"zero", b"two", b"three"]]


@pytest.mark.parametrize("xp", MODULES)
def test_topk_ties_and_integer_scores_keep_lower_index_first(xp: ModuleType) -> None:
    tied = np.zeros((3, 50), dtype=np.float32)
    tied[1, [7, 3, 40]] = 1.0
    out = run("topk", {"tensor": "s", "k": 5}, {"s": tied}, xp)
    assert out["topk_indices"].tolist() == [[0, 1, 2, 3, 4], [3, 7, 40, 0, 1], [0, 1, 2, 3, 4]]
    counts = np.array([[0, 255, 3, 255, 0]], dtype=np.uint8)  # negating would wrap around
    out = run("topk", {"tensor": "s", "k": 4}, {"s": counts}, xp)
    assert out["topk_indices"].tolist() == [[1, 3, 2, 0]]
    assert out["topk_scores"].tolist() == [[255, 255, 3, 0]]
    flags = np.array([[False, True, False, True]])
    assert run("topk", {"tensor": "s", "k": 3}, {"s": flags}, xp)["topk_indices"].tolist() == [[1, 3, 0]]


def test_topk_labels_must_match_the_classes_at_run_time() -> None:
    with pytest.raises(GatewayError, match="has 5 classes but 4 labels"):
        run("topk", {"tensor": "s", "k": 1, "labels": LABELS}, {"s": np.zeros((1, 5), np.float32)}, np)


# ------------------------------------------------------------- spec checks


@pytest.mark.parametrize(
    ("name", "params", "spec", "expected"),
    [
        ("decode_image", {"channels": 3, "size": [32, 24]}, ("BYTES", (-1,)), ("UINT8", (-1, 32, 24, 3))),
        ("decode_image", {"channels": 1, "size": [8, 8]}, ("BYTES", (4, 1)), ("UINT8", (4, 8, 8, 1))),
        ("resize", {"size": [5, 7]}, ("UINT8", (-1, 8, 8, 3)), ("FP32", (-1, 5, 7, 3))),
        ("resize", {"size": [5, 7]}, ("FP64", (-1, -1, -1)), ("FP32", (-1, 5, 7))),
        ("center_crop", {"size": [4, 4]}, ("UINT8", (-1, -1, 8, 3)), ("UINT8", (-1, 4, 4, 3))),
        ("normalize", {"mean": [1, 2, 3], "std": [1, 1, 1]}, ("UINT8", (-1, 8, 8, 3)), ("FP32", (-1, 8, 8, 3))),
        ("normalize", {"mean": [1, 2, 3], "std": 2}, ("FP32", (-1, 8, 8, -1)), ("FP32", (-1, 8, 8, -1))),
        ("normalize", {"mean": 0.5, "std": 2}, ("FP32", (-1, 8, 8)), ("FP32", (-1, 8, 8))),
        ("layout", {"order": "HWC->CHW"}, ("FP32", (-1, 32, 24, 3)), ("FP32", (-1, 3, 32, 24))),
        ("layout", {"order": "chw -> hwc"}, ("FP32", (-1, 3, 32, 24)), ("FP32", (-1, 32, 24, 3))),
        ("threshold", {"value": 0.5}, ("FP32", (-1, 3)), ("INT64", (-1, 3))),
        ("threshold", {"value": 0.5, "datatype": "BOOL"}, ("FP16", (-1,)), ("BOOL", (-1,))),
    ],
)
def test_output_specs(name: str, params: dict, spec: tuple, expected: tuple) -> None:
    op = build_op(name, {"tensor": "x", **params}, "routes[r].pre[0]")
    out = op.output_specs({"x": TensorSpec("x", *spec)})
    assert out["x"] == TensorSpec("x", *expected)


def test_topk_label_specs() -> None:
    op = build_op("topk", {"tensor": "s", "k": 2, "labels": LABELS}, "routes[r].post[0]")
    out = op.output_specs({"s": TensorSpec("s", "FP32", (-1, 4))})
    assert out["topk_labels"] == TensorSpec("topk_labels", "BYTES", (-1, 2))
    assert out["topk_indices"] == TensorSpec("topk_indices", "INT64", (-1, 2))
    assert "topk_labels" not in build_op("topk", {"tensor": "s", "k": 2}, "w").output_specs({"s": out["s"]})
    assert "topk_labels" in op.output_specs({"s": TensorSpec("s", "FP32", (-1, -1))})


@pytest.mark.parametrize(
    ("name", "params", "spec", "message"),
    [
        ("decode_image", {"channels": 1, "size": [8, 8]}, ("UINT8", (-1,)), "is UINT8, expected BYTES"),
        ("decode_image", {"channels": 1, "size": [8, 8]}, ("BYTES", (-1, 2)), "expected [batch] or [batch, 1]"),
        ("resize", {"size": [4, 4]}, ("BYTES", (-1, 8, 8)), "is BYTES"),
        ("resize", {"size": [4, 4]}, ("FP32", (-1, 64)), "expected [batch, height, width(, channels)]"),
        ("center_crop", {"size": [9, 4]}, ("UINT8", (-1, 8, 8)), "is smaller than the 9x4 crop"),
        ("center_crop", {"size": [4, 9]}, ("UINT8", (-1, -1, 8, 1)), "is smaller than the 4x9 crop"),
        ("normalize", {"mean": [0, 0, 0], "std": [1, 1, 1]}, ("UINT8", (-1, 8, 8, 1)), "has 1 channels"),
        ("normalize", {"mean": 0, "std": 1}, ("FP32", (-1,)), "needs a batch and a channel axis"),
        ("layout", {"order": "HWC->CHW"}, ("FP32", (-1, 8, 8)), "needs a batch axis and 3 more"),
        ("threshold", {"value": 0.5}, ("BYTES", (-1,)), "is BYTES"),
        ("topk", {"k": 2, "labels": LABELS}, ("FP32", (-1, 10)), "has 10 classes but 4 labels"),
    ],
)
def test_ops_reject_specs_they_cannot_handle(name: str, params: dict, spec: tuple, message: str) -> None:
    op = build_op(name, {"tensor": "x", **params}, "routes[r].pre[0]")
    with pytest.raises(OpTypeError, match=re.escape(message)):
        op.output_specs({"x": TensorSpec("x", *spec)})


# ------------------------------------------------------------- bad parameters


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("decode_image", {"channels": 2, "size": [8, 8]}, "w.channels: Input should be 1 or 3"),
        ("decode_image", {"channels": 1}, "w.size: Field required"),
        ("decode_image", {"channels": 1, "size": [8]}, "w.size: List should have at least 2 items"),
        ("decode_image", {"channels": 1, "size": [8, 0]}, "w.size.1: Input should be greater than 0"),
        ("decode_image", {"channels": 1, "size": [8, 8], "max_pixels": 0}, "w.max_pixels"),
        ("decode_image", {"channels": 1, "size": [8, 8], "formats": ["PNG", "NOPE"]}, "w.formats: Value error"),
        ("resize", {"size": [8, 8, 3]}, "w.size: List should have at most 2 items"),
        ("resize", {"size": [-1, 8]}, "w.size.0"),
        ("center_crop", {}, "w.size: Field required"),
        ("normalize", {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}, "mean has 2 values but std has 3"),
        ("normalize", {"mean": [0.5], "std": [0.2, 0.0]}, "w.std.1: Input should be greater than 0"),
        ("normalize", {"mean": [0.5], "std": [1.0], "scale": float("nan")}, "w.scale"),
        ("normalize", {"mean": [], "std": [1.0]}, "w.mean: List should have at least 1 item"),
        ("normalize", {"std": [1.0]}, "w.mean: Field required"),
        ("layout", {"order": "HWC->CHWX"}, "w.order: Value error, order must be like"),
        ("layout", {"order": "HWC"}, "w.order"),
        ("layout", {"order": "HHC->HCH"}, "w.order"),
        ("threshold", {}, "w.value: Field required"),
        ("threshold", {"value": 0.5, "datatype": "FP32"}, "w.datatype: Input should be 'INT64' or 'BOOL'"),
        ("threshold", {"value": float("inf")}, "w.value"),
        ("topk", {"k": 5, "labels": LABELS}, "k=5 is more than the 4 labels"),
        ("topk", {"k": 1, "labels": []}, "w.labels: List should have at least 1 item"),
        ("topk", {"k": 1, "labels": "abc"}, "w.labels"),
        ("resize", {"size": [8, 8], "antialias": True}, "w.antialias: Extra inputs are not permitted"),
    ],
)
def test_bad_parameters_name_the_field(name: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_op(name, {"tensor": "x", **params}, "w")
    assert message in str(info.value)


# ----------------------------------------------------------- CuPy vs NumPy


def _cases() -> list[tuple[str, dict, dict]]:
    images = rng.integers(0, 256, size=(3, 11, 9, 3), dtype=np.uint8)
    scores = rng.normal(size=(4, 6)).astype(np.float32)
    scores[0, 1] = scores[0, 4]  # a tie
    return [
        ("decode_image", {"channels": 3, "size": [10, 7]}, {"x": blobs(*(encode(i) for i in images))}),
        ("resize", {"size": [17, 5]}, {"x": images}),
        ("resize", {"size": [4, 30]}, {"x": images[..., 0].astype(np.float64)}),
        ("center_crop", {"size": [5, 4]}, {"x": images}),
        ("normalize", {"mean": [120, 110, 100], "std": [60, 50, 40], "scale": 1.5}, {"x": images}),
        ("layout", {"order": "HWC->CHW"}, {"x": images}),
        ("threshold", {"value": 0.25}, {"x": scores}),
        ("threshold", {"value": 100, "datatype": "BOOL"}, {"x": images}),
        ("topk", {"k": 4, "labels": ["a", "b", "c", "d", "e", "f"]}, {"x": scores}),
    ]


@pytest.mark.skipif(CUPY is None, reason="no CUDA device or CuPy")
def test_cupy_matches_numpy() -> None:
    for name, params, arrays in _cases():
        on_cpu = run(name, {"tensor": "x", **params}, arrays, np)
        on_gpu = run(name, {"tensor": "x", **params}, arrays, CUPY)
        assert on_cpu.keys() == on_gpu.keys(), name
        for key, expected in on_cpu.items():
            got = on_gpu[key]
            assert got.dtype == expected.dtype and got.shape == expected.shape, (name, key)
            if expected.dtype.kind == "f":
                np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-5, err_msg=f"{name} {key}")
            else:
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} {key}")
