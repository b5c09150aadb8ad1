"""Calls carried over one bidirectional gRPC stream (``Gateway/InferStream`` or Triton's ``ModelStreamInfer``).

Owns matching answers to requests by id, reading only that id from each answer
(a hand-rolled protobuf field scan); not the load loops (``worker``).
"""

from __future__ import annotations

import asyncio
from typing import Any


class StreamStatusError(Exception):
    """A request answered on a stream with an error status instead of a response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The protobuf varint at ``data[at:]`` and the offset after it."""
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


class StreamCaller:
    """Calls over one bidirectional stream: every caller's request in flight on the same stream.

    ``Gateway/InferStream`` by default; with ``oip`` Triton's
    ``ModelStreamInfer``. The streaming counterpart of a ``grpc.aio`` unary
    callable (same call signature; bytes in, the stream answer's bytes out).
    The stream opens on the first call, and again after it breaks. Each call
    appends its own id to the pre-serialized request (protobuf keeps the last
    value of a field: ``InferRequest.request_id``, field 2, or
    ``ModelInferRequest.id``, field 3) and waits for the answer carrying it;
    only that id is read from answers during measurement.
    """

    def __init__(self, channel: Any, method: str, *, oip: bool = False) -> None:
        self._method = channel.stream_stream(method)  # no serializers: bytes in, bytes out
        self._oip = oip
        self._id_tag = b"\x1a" if oip else b"\x12"
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}
        self._write = asyncio.Lock()  # one message written at a time
        self._sent = 0

    async def __call__(self, request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        self._sent += 1
        request_id = b"%x" % self._sent
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with asyncio.timeout(timeout):
                async with self._write:
                    if self._call is None:
                        self._call = self._method(wait_for_ready=wait_for_ready)
                        self._reader = asyncio.ensure_future(self._read(self._call))
                    await self._call.write(request + self._id_tag + bytes([len(request_id)]) + request_id)
                return await future
        finally:
            self._pending.pop(request_id, None)
            if future.done() and not future.cancelled():
                # The stream broke while this call was still writing: the reader failed the future too, but
                # the caller got the write's error instead. Mark it seen, or asyncio logs each one as never
                # retrieved (a flood of tracebacks when a server dies under load).
                future.exception()
            else:
                future.cancel()

    def _answer_of(self, data: bytes) -> tuple[bytes, Exception | None]:
        """The request id an answer carries, and the error it reports (None for a response)."""
        if self._oip:  # ModelStreamInferResponse: 1 error_message, 2 infer_response (whose field 3 is the id)
            error = _field(data, 1)
            response = _field(data, 2) or b""
            request_id = _field(response, 3) or b""
            return request_id, StreamStatusError("TRITON_ERROR", error.decode(errors="replace")) if error else None
        if data[:1] == b"\x0a":  # InferStream: field 1, request_id, comes first; field 3 is the error status
            size, at = _varint(data, 1)
            request_id, error = data[at : at + size], data[at + size : at + size + 1] == b"\x1a"
        else:
            from switchyard.v1 import gateway_pb2

            message = gateway_pb2.StreamInferResponse.FromString(data)
            request_id, error = message.request_id.encode(), message.HasField("error")
        if not error:
            return request_id, None
        import grpc

        from switchyard.v1 import gateway_pb2

        status = gateway_pb2.StreamInferResponse.FromString(data).error
        codes = {code.value[0]: code.name for code in grpc.StatusCode}
        return request_id, StreamStatusError(codes.get(status.code, str(status.code)), status.message)

    async def _read(self, call: Any) -> None:
        import grpc

        failure: BaseException = RuntimeError("the stream ended")
        try:
            while (data := await call.read()) is not grpc.aio.EOF:
                request_id, error = self._answer_of(data)
                future = self._pending.get(request_id)
                if future is None or future.done():
                    if error is not None and not request_id:
                        raise error  # an error that names no request: the stream is of no further use
                    continue
                if error is not None:
                    future.set_exception(error)
                else:
                    future.set_result(data)
        except Exception as exc:  # the stream broke: every call waiting on it fails with the reason
            failure = exc
        finally:
            if self._call is call:
                self._call = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(failure)

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


def _field(data: bytes, number: int) -> bytes | None:
    """The bytes of the last length-delimited field ``number`` of a serialized message (None when absent)."""
    found, at = None, 0
    while at < len(data):
        key, at = _varint(data, at)
        wire = key & 7
        if wire == 0:
            _, at = _varint(data, at)
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        elif wire == 2:
            size, at = _varint(data, at)
            if key >> 3 == number:
                found = data[at : at + size]
            at += size
        else:
            raise ValueError(f"wire type {wire} in a stream answer")
    return found
