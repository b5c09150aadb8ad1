"""The pre-processing benchmark (benchmarks/preprocess.py): its pipeline, its checks, its ratios, a smoke run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from benchmarks import preprocess
from benchmarks.preprocess import IMAGENET_MEAN, IMAGENET_STD, Profile, build_pipeline, device_part, measure, summarise


def test_the_pipeline_gives_normalised_chw_224_images() -> None:
    # Flat colours survive resize and crop unchanged, so every output pixel is (colour / 255 - mean) / std.
    colours = np.array([[0, 128, 255], [10, 200, 30]], dtype=np.uint8)
    pixels = np.broadcast_to(colours[:, None, None, :], (2, 300, 300, 3)).copy()
    _, ops = build_pipeline()
    out = device_part(ops, pixels, np)
    assert out.shape == (2, 3, 224, 224) and out.dtype == np.float32
    expected = (colours / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, :, None, None], out.shape), rtol=1e-5, atol=1e-5)


def test_generated_images_decode_to_the_source_size_and_differ() -> None:
    decoder, _ = build_pipeline()
    images = preprocess.generated_images(3, side=preprocess.SOURCE_SIDE)
    pixels = preprocess.decode(decoder, images)
    assert pixels.shape == (3, preprocess.SOURCE_SIDE, preprocess.SOURCE_SIDE, 3) and pixels.dtype == np.uint8
    assert len({image for image in images}) == 3 and not np.array_equal(pixels[0], pixels[1])


class _WrongLayout(ModuleType):
    """NumPy, except that ``transpose`` ignores the axes asked for: a module whose results are wrong."""

    def __init__(self) -> None:
        super().__init__("wrong_layout")

    def __getattr__(self, name: str) -> Any:
        if name == "transpose":
            return lambda array, axes=None: np.transpose(array, (0, 1, 3, 2))
        return getattr(np, name)


def test_measure_refuses_a_module_whose_result_differs_from_numpy() -> None:
    images = preprocess.generated_images(2)
    profile = Profile("t", (2,), seconds=0.0, rounds=1, warmup=0)
    with pytest.raises(AssertionError, match="wrong differs from NumPy at batch 2"):
        measure(profile, {"numpy": np, "wrong": _WrongLayout()}, lambda message: None, images)


def _points(xp: str, mode: str, batch: int, per_round_ms: list[float]) -> list[dict[str, Any]]:
    return [
        {"xp": xp, "mode": mode, "batch": batch, "round": r, "median_ms": ms, "p90_ms": ms, "images_per_s": batch / ms}
        for r, ms in enumerate(per_round_ms)
    ]


def test_summarise_takes_each_ratio_within_a_round() -> None:
    # The machine slows down 2x in round 1: ratios within each round stay 5x, a cross-round pairing would not.
    points = [
        *_points("host", "decode", 8, [6.0, 12.0]),
        *_points("numpy", "batched", 8, [10.0, 20.0]),
        *_points("numpy", "per_image", 8, [30.0, 60.0]),
        *_points("cupy", "batched", 8, [2.0, 4.0]),
        *_points("cupy", "per_image", 8, [16.0, 40.0]),
    ]
    rows = {(row["xp"], row["mode"]): row for row in summarise(points)}
    assert set(rows) == {("numpy", "batched"), ("numpy", "per_image"), ("cupy", "batched"), ("cupy", "per_image")}
    cupy = rows[("cupy", "batched")]
    assert cupy["x_numpy"] == {"median": 5.0, "min": 5.0, "max": 5.0}
    assert cupy["x_per_image"] == {"median": 9.0, "min": 8.0, "max": 10.0}
    assert cupy["median_ms"] == 3.0 and cupy["decode_ms"] == 9.0
    # Decode and device part of the same round: 8 images in 8 ms, then in 16 ms.
    assert cupy["total_images_per_s"] == {"median": 750.0, "min": 500.0, "max": 1000.0}
    assert rows[("cupy", "per_image")]["x_numpy"] == {"median": 1.6875, "min": 1.5, "max": 1.875}
    assert rows[("cupy", "per_image")]["x_per_image"] is None
    assert rows[("numpy", "batched")]["x_numpy"] == {"median": 1.0, "min": 1.0, "max": 1.0}


def test_smoke_run_writes_the_report_with_the_device_or_why_not(tmp_path: Path) -> None:
    assert preprocess.main(["--smoke", "--batches", "1,3", "--out", str(tmp_path)]) == 0
    (report_file,) = tmp_path.glob("preprocess-smoke-*.json")
    report = json.loads(report_file.read_text())
    cupy, device = preprocess.cupy_module()
    modules = {"numpy"} | ({"cupy"} if cupy is not None else set())
    assert {(row["xp"], row["mode"], row["batch"]) for row in report["rows"]} == {
        (xp, mode, batch) for xp in modules for mode in preprocess.MODES for batch in (1, 3)
    }
    assert all(row["median_ms"] > 0 and row["decode_ms"] > 0 for row in report["rows"])
    assert (report["meta"]["device"], report["meta"]["cupy_skipped"]) == (
        (device, None) if cupy is not None else (None, device)
    )
    table = (tmp_path / report["files"]["markdown"]).read_text()
    assert "| batch | module | ops run |" in table and (cupy is not None or "CuPy rows left out" in table)


def test_cli_refuses_unknown_modules_and_bad_batches(tmp_path: Path) -> None:
    for argv in (["--xp", "torch"], ["--batches", "0,4"], ["--rounds", "0"]):
        with pytest.raises(SystemExit) as exc:
            preprocess.main([*argv, "--out", str(tmp_path)])
        assert exc.value.code == 2
    assert not list(tmp_path.iterdir())
