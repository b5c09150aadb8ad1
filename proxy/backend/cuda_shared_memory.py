"""Inputs that pre-processing left on the GPU, handed to Triton through CUDA shared memory (no host copy).

When the ops run on CuPy, a single-model route keeps its pre-processed inputs
on the device (:class:`DeviceTensor`). With a Triton on this host and
``triton_shared_memory = "system"`` (the same switch as system shared memory)
each endpoint gets one block of device memory, cut into equal slots and
registered with Triton once as a CUDA IPC region
(``CudaSharedMemoryRegister``; ``TritonBackend`` does the RPCs). A device
input is copied device-to-device into a free slot and the request names the
region, offset and size: the tensor never crosses to the host or the gRPC
message. Slots follow the system pool's lifecycle (release once Triton has
answered, quarantine otherwise; :class:`~switchyard.proxy.backend.shared_memory.SlotPool`).
A device input that finds no slot, or any input on an endpoint without the
pool, travels as bytes: :attr:`DeviceTensor.raw_data` copies it to the host then.

CuPy is imported only when a pool is made: without the ``gpu`` extra nothing
here runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from switchyard.proxy.backend.shared_memory import SlotPool
from switchyard.proxy.tensor_spec import TensorLike
from switchyard.v1 import gateway_pb2 as pb
from switchyard.v1.tensors import from_numpy, raw_bytes


@dataclass(eq=False)
class DeviceTensor:
    """A tensor held as a CuPy array on the GPU, with the attributes of a ``switchyard.v1.Tensor`` message."""

    name: str
    datatype: str
    array: Any
    """A CuPy array."""

    @property
    def shape(self) -> list[int]:
        return [int(d) for d in self.array.shape]

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    def host(self) -> np.ndarray[Any, Any]:
        host: np.ndarray[Any, Any] = self.array.get()
        return host

    @property
    def raw_data(self) -> bytes:
        """The wire bytes (a copy to the host): what travels when no CUDA slot takes the tensor."""
        return raw_bytes(self.host())

    def to_message(self) -> pb.Tensor:
        return from_numpy(self.name, self.host())


def as_message(tensor: TensorLike) -> pb.Tensor:
    """``tensor`` as a ``switchyard.v1.Tensor`` message (a device tensor is copied to the host)."""
    if isinstance(tensor, pb.Tensor):
        return tensor
    if isinstance(tensor, DeviceTensor):
        return tensor.to_message()
    return pb.Tensor(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape, raw_data=tensor.raw_data)


class CudaSharedMemoryPool(SlotPool):
    """Equal slots of one block of device memory, exported to Triton as a CUDA IPC region."""

    region_prefix = "switchyard_cuda"

    def __init__(
        self,
        *,
        slots: int,
        slot_bytes: int,
        threshold_bytes: int,
        quarantine_s: float,
        label: str = "",
        device_id: int | None = None,
    ) -> None:
        import cupy

        self._cupy = cupy
        self.device_id = cupy.cuda.Device().id if device_id is None else device_id
        super().__init__(
            slots=slots, slot_bytes=slot_bytes, threshold_bytes=threshold_bytes, quarantine_s=quarantine_s, label=label
        )

    def _allocate(self) -> None:
        cupy = self._cupy
        with cupy.cuda.Device(self.device_id):
            # A plain cudaMalloc of its own (not CuPy's pool): an IPC handle exports a whole allocation.
            self._memory: Any = cupy.cuda.Memory(self.byte_size)
            self.raw_handle: bytes = bytes(cupy.cuda.runtime.ipcGetMemHandle(self._memory.ptr))
        """The cudaIpcMemHandle_t Triton opens the region with."""

    def take(self, tensor: DeviceTensor) -> int | None:
        """Copies ``tensor`` into a free slot on the device and returns the slot's offset, or None (send bytes).

        The copy is finished when this returns: Triton, another process, reads the slot.
        """
        if self._memory is None:
            return None
        slot = self._slot_for(tensor.nbytes)
        if slot is None:
            return None
        cupy = self._cupy
        offset = slot * self.slot_bytes
        with cupy.cuda.Device(self.device_id):
            source = cupy.ascontiguousarray(tensor.array).ravel().view(cupy.uint8)
            target = cupy.ndarray(
                (tensor.nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(self._memory, offset)
            )
            target[...] = source
            cupy.cuda.get_current_stream().synchronize()
        return offset

    def read(self, offset: int, nbytes: int) -> bytes:
        """The bytes of a slot (host copy): for checks and tests."""
        cupy = self._cupy
        with cupy.cuda.Device(self.device_id):
            view = cupy.ndarray((nbytes,), dtype=cupy.uint8, memptr=cupy.cuda.MemoryPointer(self._memory, offset))
            return bytes(view.get())

    def close(self) -> None:
        """Frees the device memory (unregister it from Triton first); safe to call more than once."""
        self._memory = None


def cuda_available() -> bool:
    """Whether CuPy imports and sees a device (the condition for a CUDA pool)."""
    try:
        import cupy

        return bool(cupy.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # any failure to load CuPy or find a device
        return False
