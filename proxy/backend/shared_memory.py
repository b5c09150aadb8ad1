"""Input tensors through Triton's system shared memory, for a Triton on the same host.

One POSIX shared-memory segment per gateway process, cut into equal slots
and registered once with Triton as one region (``SystemSharedMemoryRegister``;
``TritonBackend`` does the RPCs). A large input (``threshold_bytes`` or more,
at most ``slot_bytes``) is copied into a free slot and the request names the
region, offset and size instead of carrying the bytes: Triton reads the
tensor straight from the slot, skipping the gRPC transport of the payload.

A slot's lifecycle is what keeps requests apart. It is taken by one request
and given back (``release``) only once Triton has answered that request:
after the answer Triton no longer reads it. A request that ends without
Triton's answer (deadline exceeded, cancelled, connection lost, an error that
may come from the transport) may still be queued in Triton, which would read
the slot later, so the slot is ``quarantine``d: kept out of use for
``quarantine_s`` before it returns to the pool. No free slot, or a tensor too
large for one: the input travels as bytes, as without this module.

It owns the segment and the slots, not the RPCs or the decision of which
calls are safe (``proxy.backend.triton``).
"""

from __future__ import annotations

import heapq
import os
import secrets
import time
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import ClassVar

from prometheus_client import Counter, Gauge

from switchyard.proxy.checks import at_least

SHM_INPUTS = Counter(
    "switchyard_backend_shm_inputs",
    "Large input tensors sent to Triton, by endpoint and way (shm: through a shared-memory slot; "
    "bytes_exhausted: no free slot; bytes_too_large: larger than a slot; bytes_unregistered: region not registered).",
    ["endpoint", "way"],
)
SHM_QUARANTINED = Gauge(
    "switchyard_backend_shm_quarantined_slots",
    "Shared-memory slots kept out of use because Triton may still read them (a call ended without its answer).",
    ["endpoint"],
    multiprocess_mode="livesum",
)


@dataclass(frozen=True)
class PoolStats:
    """How the slots stand now."""

    slots: int
    free: int
    in_use: int
    quarantined: int


class SlotPool:
    """Equal slots of one region Triton reads inputs from, and their lifecycle (see the module docstring).

    Not thread-safe (used from one event loop). A subclass owns the memory
    (a POSIX segment here, device memory in ``cuda_shared_memory``).
    """

    region_prefix: ClassVar[str] = "switchyard"
    """Names of this kind's regions start with it."""

    def __init__(
        self, *, slots: int, slot_bytes: int, threshold_bytes: int, quarantine_s: float, label: str = ""
    ) -> None:
        at_least("slots", slots, 1)
        at_least("slot_bytes", slot_bytes, threshold_bytes)
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.threshold_bytes = threshold_bytes
        """Inputs smaller than this travel in the message."""
        self.quarantine_s = quarantine_s
        """How long a slot Triton may still read stays out of use."""
        self.label = label
        # The process id and a random part keep several gateways on one host (and on one Triton) apart.
        self.region = f"{self.region_prefix}_{os.getpid()}_{secrets.token_hex(4)}"
        self.byte_size = slots * slot_bytes
        self._free = list(range(slots))
        self._quarantine: list[tuple[float, int]] = []  # (free again at, slot), a heap
        self.registered = False
        """Whether Triton knows the region now (set and cleared by the backend client)."""
        self.retry_at = 0.0
        """After a failed registration, not tried again before this ``time.monotonic()``."""
        self._allocate()

    def _allocate(self) -> None:
        """Creates the region's memory (``byte_size`` bytes, named ``region``): the subclass's part."""
        raise NotImplementedError

    def fits(self, nbytes: int) -> bool:
        """Whether a tensor of ``nbytes`` is one this pool is for (large enough; the slot size is checked on take)."""
        return nbytes >= self.threshold_bytes

    def _slot_for(self, nbytes: int) -> int | None:
        """A free slot for ``nbytes`` (counted as taken), or None (counted: too large, or none free)."""
        if nbytes > self.slot_bytes:
            SHM_INPUTS.labels(self.label, "bytes_too_large").inc()
            return None
        self._reclaim()
        if not self._free:
            SHM_INPUTS.labels(self.label, "bytes_exhausted").inc()
            return None
        SHM_INPUTS.labels(self.label, "shm").inc()
        return self._free.pop()  # the last one given back: its pages are the warmest

    def release(self, offset: int) -> None:
        """Triton answered the request that used the slot at ``offset``: it may be taken again."""
        self._free.append(offset // self.slot_bytes)

    def quarantine(self, offset: int) -> None:
        """The request ended without Triton's answer: keep the slot out of use for ``quarantine_s``."""
        heapq.heappush(self._quarantine, (time.monotonic() + self.quarantine_s, offset // self.slot_bytes))
        SHM_QUARANTINED.labels(self.label).set(len(self._quarantine))

    def _reclaim(self) -> None:
        now = time.monotonic()
        while self._quarantine and self._quarantine[0][0] <= now:
            self._free.append(heapq.heappop(self._quarantine)[1])
            SHM_QUARANTINED.labels(self.label).set(len(self._quarantine))

    def stats(self) -> PoolStats:
        self._reclaim()
        free, quarantined = len(self._free), len(self._quarantine)
        return PoolStats(self.slots, free, self.slots - free - quarantined, quarantined)


class SharedMemoryPool(SlotPool):
    """Equal slots of one POSIX shared-memory segment."""

    key: str
    """The segment's name as Triton opens it (``/`` + ``region``)."""

    def _allocate(self) -> None:
        self.key = "/" + self.region
        self._segment: shared_memory.SharedMemory | None = shared_memory.SharedMemory(
            name=self.region, create=True, size=self.byte_size
        )

    def take(self, data: bytes) -> int | None:
        """Copies ``data`` into a free slot and returns the slot's offset, or None (the caller sends bytes)."""
        if self._segment is None:
            return None
        slot = self._slot_for(len(data))
        if slot is None:
            return None
        buf = self._segment.buf
        assert buf is not None  # only None once closed
        offset = slot * self.slot_bytes
        buf[offset : offset + len(data)] = data
        return offset

    def close(self) -> None:
        """Unmaps and removes the segment (unregister it from Triton first); safe to call more than once."""
        segment, self._segment = self._segment, None
        if segment is not None:
            segment.close()
            segment.unlink()
