"""Image pre-processing ops: decode, resize, center crop, normalize, layout.

Images are batch first and channels last (``[batch, height, width, channels]``,
or ``[batch, height, width]`` for single-channel images) until ``layout``
moves the channel axis. Everything except ``decode_image`` is written against
the array module ``xp`` and gives the same results on NumPy and CuPy;
``decode_image`` runs on the CPU with Pillow and moves its result to ``xp``.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import Field, FiniteFloat, PositiveInt, field_validator, model_validator

from switchyard.proxy.errors import InvalidInput
from switchyard.proxy.ops.array_module import to_device
from switchyard.proxy.ops.base import Op, OpTypeError, register_op
from switchyard.proxy.ops.tensor_ops import require_numeric
from switchyard.proxy.tensor_spec import TensorSpec

# [height, width] of an image, both positive.
Size = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]

_MODES = {1: "L", 3: "RGB"}

CHUNK_BYTES = 1 << 20
"""On NumPy, per-image ops work through a batch in slices of about this many bytes of FP32 working array."""


def by_chunks(array: Any, row_bytes: int, xp: ModuleType, compute: Callable[[Any], Any]) -> Any:
    """``compute(array)`` for an op that treats each image on its own; on NumPy, slice by slice.

    A whole batch's FP32 temporaries (8-70 MB for 8-64 224x224 images) miss the CPU caches and come as
    fresh pages from the kernel on every call; slices of about ``CHUNK_BYTES`` stay in cache, and the
    results are the same bit for bit. On CuPy the batch goes whole: one kernel per step, not one per slice.
    """
    rows = max(1, CHUNK_BYTES // max(1, row_bytes))
    count = int(array.shape[0])
    if xp is not np or count <= rows:
        return compute(array)
    first = compute(array[:rows])
    out = np.empty((count, *first.shape[1:]), dtype=first.dtype)
    out[:rows] = first
    for start in range(rows, count, rows):
        out[start : start + rows] = compute(array[start : start + rows])
    return out


def require_image(spec: TensorSpec) -> None:
    """An image batch: ``[batch, height, width]`` or ``[batch, height, width, channels]``."""
    if len(spec.shape) not in (3, 4):
        raise OpTypeError(
            f"tensor {spec.name!r} has shape {list(spec.shape)}, expected [batch, height, width(, channels)]"
        )


def _field(tensor: str, index: int | None = None) -> str:
    return f"inputs[{tensor}]" if index is None else f"inputs[{tensor}][{index}]"


@register_op
class DecodeImage(Op):
    """Decodes encoded images (PNG or JPEG) into a ``UINT8 [batch, H, W, C]`` tensor.

    The input is a BYTES tensor with one encoded image per batch entry
    (shape ``[-1]`` or ``[-1, 1]``). ``channels`` is 1 (grayscale, Pillow mode
    ``"L"``) or 3 (``"RGB"``; alpha is dropped, not composited). ``size =
    [H, W]`` is required: every image is resized to it while decoding, with
    Pillow's bilinear filter (antialiased when shrinking), so images of any
    size make one rectangular batch.

    Decoding runs on the CPU with Pillow whatever the array module; the
    result is then moved to ``xp``. ``formats`` lists the Pillow formats
    accepted (default PNG and JPEG). A payload that is not such an image, and
    an image declaring more than ``max_pixels`` pixels (a decompression bomb:
    checked from the header, before any pixel is decoded), are rejected with
    ``InvalidInput`` naming ``inputs[<tensor>][<index>]``.
    """

    name: ClassVar[str] = "decode_image"
    channels: Literal[1, 3]
    size: Size
    max_pixels: PositiveInt = 4096 * 4096
    formats: list[str] = Field(default_factory=lambda: ["PNG", "JPEG"], min_length=1)

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        Image.init()
        formats = [f.upper() for f in value]
        unknown = [f for f in formats if f not in Image.OPEN]
        if unknown:
            raise ValueError(f"Pillow cannot open {', '.join(unknown)} (known: {', '.join(sorted(Image.OPEN))})")
        return formats

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        if spec.datatype != "BYTES":
            raise OpTypeError(f"tensor {spec.name!r} is {spec.datatype}, expected BYTES (encoded images)")
        if len(spec.shape) not in (1, 2) or (len(spec.shape) == 2 and spec.shape[1] not in (1, -1)):
            raise OpTypeError(
                f"tensor {spec.name!r} has shape {list(spec.shape)}, expected [batch] or [batch, 1] encoded images"
            )
        height, width = self.size
        return TensorSpec(spec.name, "UINT8", (spec.shape[0], height, width, self.channels))

    def compute(self, array: Any, xp: ModuleType) -> Any:
        items = np.asarray(array, dtype=np.object_).reshape(-1)
        height, width = self.size
        out = np.empty((len(items), height, width, self.channels), dtype=np.uint8)
        for i, item in enumerate(items):
            out[i] = self._decode_one(item, _field(self.tensor, i))
        return to_device(out, xp)

    def _decode_one(self, item: Any, field: str) -> npt.NDArray[Any]:
        if not isinstance(item, bytes | bytearray | memoryview):
            raise InvalidInput(field, "expected the bytes of an encoded image")
        kinds = "/".join(self.formats)
        try:
            image = Image.open(io.BytesIO(bytes(item)), formats=self.formats)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidInput(field, f"image has more than max_pixels={self.max_pixels} pixels") from None
        except Exception:
            raise InvalidInput(field, f"not a decodable {kinds} image") from None
        with image:
            width, height = image.size
            if width * height > self.max_pixels:
                raise InvalidInput(field, f"image is {width}x{height}, more than max_pixels={self.max_pixels} pixels")
            try:
                converted = image.convert(_MODES[self.channels])
                if converted.size != (self.size[1], self.size[0]):
                    converted = converted.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(converted, dtype=np.uint8)
            except Exception:
                raise InvalidInput(field, f"not a decodable {kinds} image (corrupt or truncated data)") from None
        return pixels.reshape(self.size[0], self.size[1], self.channels)


@functools.lru_cache(maxsize=256)
def _linear_taps(n_in: int, n_out: int) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]:
    """Source indices and weights of bilinear sampling with half-pixel centres.

    Output pixel ``i`` samples the input at ``(i + 0.5) * n_in / n_out - 0.5``,
    clamped to ``[0, n_in - 1]`` (OpenCV's INTER_LINEAR, PyTorch's
    ``align_corners=False``). Computed on the host in float64 so NumPy and
    CuPy interpolate with identical indices and weights.
    """
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    weights = (src - low).astype(np.float32)
    # Cached per (n_in, n_out): every request of one image size shares them, so they must stay unchanged.
    for array in (low, high, weights):
        array.flags.writeable = False
    return low, high, weights


def _image_spec(spec: TensorSpec, size: Size, datatype: str) -> TensorSpec:
    """``spec`` (checked: a numeric image batch) with images of ``size = [h, w]`` and type ``datatype``."""
    require_numeric(spec)
    require_image(spec)
    height, width = size
    return TensorSpec(spec.name, datatype, (spec.shape[0], height, width, *spec.shape[3:]))


@register_op
class Resize(Op):
    """Bilinear resize of an image batch to ``size = [h, w]``; the output is FP32.

    Takes ``[batch, H, W, C]`` or ``[batch, H, W]`` of any numeric type and
    returns ``[batch, h, w, C]`` (or ``[batch, h, w]``) as FP32 whatever the
    input type (values are not rounded back). Sampling uses half-pixel
    centres (``align_corners=False``) with edge clamping, like OpenCV's
    ``INTER_LINEAR`` and Pillow's bilinear filter when enlarging; there is no
    antialiasing, so shrinking by more than 2x skips pixels. Implemented with
    ``xp`` gathers and linear interpolation, identically on NumPy and CuPy.
    """

    name: ClassVar[str] = "resize"
    size: Size

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        return _image_spec(spec, self.size, "FP32")

    def compute(self, array: Any, xp: ModuleType) -> Any:
        in_h, in_w = int(array.shape[1]), int(array.shape[2])
        if in_h == 0 or in_w == 0:
            raise InvalidInput(_field(self.tensor), f"image is {in_h}x{in_w}, cannot resize an empty image")
        channels = int(np.prod(array.shape[3:], dtype=np.int64))
        # Per image, the largest working array is the FP32 row gather: out_h x in_w x channels.
        return by_chunks(array, 4 * self.size[0] * in_w * channels, xp, lambda part: self._resize(part, xp))

    def _resize(self, array: Any, xp: ModuleType) -> Any:
        in_h, in_w = int(array.shape[1]), int(array.shape[2])
        out_h, out_w = self.size
        trailing = (1,) * (array.ndim - 3)
        y0, y1, wy = _linear_taps(in_h, out_h)
        x0, x1, wx = _linear_taps(in_w, out_w)
        wy_d = xp.asarray(wy.reshape((out_h, 1, *trailing)))
        wx_d = xp.asarray(wx.reshape((out_w, *trailing)))
        # Gather the rows in the input's own type, then convert (never the whole input to FP32), and
        # interpolate in place: top + (bottom - top) * w, with no temporaries beyond the two gathers.
        top = xp.take(array, xp.asarray(y0), axis=1).astype(xp.float32, copy=False)
        rows = xp.take(array, xp.asarray(y1), axis=1).astype(xp.float32, copy=False)
        rows -= top
        rows *= wy_d
        rows += top
        left = xp.take(rows, xp.asarray(x0), axis=2)
        out = xp.take(rows, xp.asarray(x1), axis=2)
        out -= left
        out *= wx_d
        out += left
        return out


@register_op
class CenterCrop(Op):
    """Cuts the central ``size = [h, w]`` window out of ``[batch, H, W(, C)]``; the type is kept.

    The window starts at ``((H - h) // 2, (W - w) // 2)``. An image smaller
    than the crop is rejected: at start-up when its size is static, with
    ``InvalidInput`` otherwise.
    """

    name: ClassVar[str] = "center_crop"
    size: Size

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        cropped = _image_spec(spec, self.size, spec.datatype)
        height, width = self.size
        in_h, in_w = spec.shape[1], spec.shape[2]
        if (in_h != -1 and in_h < height) or (in_w != -1 and in_w < width):
            raise OpTypeError(
                f"tensor {spec.name!r} with shape {list(spec.shape)} is smaller than the {height}x{width} crop"
            )
        return cropped

    def compute(self, array: Any, xp: ModuleType) -> Any:
        height, width = self.size
        in_h, in_w = int(array.shape[1]), int(array.shape[2])
        if in_h < height or in_w < width:
            raise InvalidInput(_field(self.tensor), f"image is {in_h}x{in_w}, smaller than the {height}x{width} crop")
        top, left = (in_h - height) // 2, (in_w - width) // 2
        return xp.ascontiguousarray(array[:, top : top + height, left : left + width])


@register_op
class Normalize(Op):
    """``(x * scale - mean) / std`` per channel (last axis); the output is FP32.

    ``mean`` and ``std`` are one number for every channel or a list with one
    value per channel (channels last, HWC); ``std`` values must be > 0.
    ``scale`` (default 1) is applied first, e.g. ``1/255`` to bring UINT8
    pixels to [0, 1]. Any numeric input type; computed in float32.
    """

    name: ClassVar[str] = "normalize"
    mean: list[FiniteFloat] = Field(min_length=1)
    std: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(min_length=1)
    scale: FiniteFloat = 1.0

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _one_number_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _same_length(self) -> Normalize:
        channels = self.channels
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        return self

    @property
    def channels(self) -> int:
        """How many channels the lists describe (1 = the same values for every channel)."""
        return max(len(self.mean), len(self.std))

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        require_numeric(spec)
        if len(spec.shape) < 2:
            raise OpTypeError(f"tensor {spec.name!r} needs a batch and a channel axis, has shape {list(spec.shape)}")
        if self.channels > 1 and spec.shape[-1] not in (-1, self.channels):
            raise OpTypeError(
                f"tensor {spec.name!r} has {spec.shape[-1]} channels (last axis), mean/std have {self.channels}"
            )
        return TensorSpec(spec.name, "FP32", spec.shape)

    def compute(self, array: Any, xp: ModuleType) -> Any:
        if self.channels > 1 and (array.ndim < 2 or array.shape[-1] != self.channels):
            raise InvalidInput(
                _field(self.tensor), f"has {array.shape[-1]} channels (last axis), expected {self.channels}"
            )
        mean = xp.asarray(np.asarray(self.mean, dtype=np.float32))
        std = xp.asarray(np.asarray(self.std, dtype=np.float32))

        def normalize(part: Any) -> Any:
            pixels = part.astype(xp.float32)  # a copy, which the steps below change in place
            if self.scale != 1.0:
                pixels *= np.float32(self.scale)
            pixels -= mean
            pixels /= std
            return pixels

        row_bytes = 4 * int(np.prod(array.shape[1:], dtype=np.int64)) if array.ndim > 1 else 4
        return by_chunks(array, row_bytes, xp, normalize)


@register_op
class Layout(Op):
    """Permutes the axes after the batch: ``order = "HWC->CHW"`` (or ``"CHW->HWC"``, ...).

    Both sides name the same distinct letters, one per axis after the batch
    axis, which stays first. The type is kept; the result is contiguous.
    """

    name: ClassVar[str] = "layout"
    order: str

    @field_validator("order")
    @classmethod
    def _permutation(cls, value: str) -> str:
        source, sep, dest = value.replace(" ", "").upper().partition("->")
        if (
            not sep
            or not source.isalpha()
            or len(set(source)) != len(source)
            or sorted(source) != sorted(dest)
            or len(source) < 2
        ):
            raise ValueError('order must be like "HWC->CHW": the same distinct letters on both sides of ->')
        return f"{source}->{dest}"

    @property
    def axes(self) -> tuple[int, ...]:
        """The transpose axes, batch axis included."""
        source, _, dest = self.order.partition("->")
        return (0, *(1 + source.index(letter) for letter in dest))

    def transform_spec(self, spec: TensorSpec) -> TensorSpec:
        axes = self.axes
        if len(spec.shape) != len(axes):
            raise OpTypeError(
                f"tensor {spec.name!r} has shape {list(spec.shape)}, "
                f"order {self.order!r} needs a batch axis and {len(axes) - 1} more"
            )
        return TensorSpec(spec.name, spec.datatype, tuple(spec.shape[a] for a in axes))

    def compute(self, array: Any, xp: ModuleType) -> Any:
        return xp.ascontiguousarray(xp.transpose(array, self.axes))
