"""A minimal HTTP/1.1 client over keep-alive connections, with the call signature of a ``grpc.aio`` unary callable.

It drives the HTTP peers (``benchmarks.peers``); pre-built request bytes in,
body bytes out.
"""

from __future__ import annotations

import asyncio


class HttpStatusError(Exception):
    """An HTTP answer other than 200."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:200]!r}")
        self.status = status


class HttpClient:
    """POSTs pre-built HTTP/1.1 requests over keep-alive connections, one connection per call in flight.

    The HTTP counterpart of a ``grpc.aio`` unary callable (same call signature,
    bytes in, body bytes out): connections are opened on demand and reused, so a
    closed loop of ``c`` callers holds ``c`` connections (no pipelining).
    """

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self._host, self._port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    async def __call__(self, request: bytes, timeout: float | None = None, wait_for_ready: bool = False) -> bytes:
        async with asyncio.timeout(timeout):
            if self._idle:
                reader, writer = self._idle.pop()
            else:
                reader, writer = await self._connect(wait_for_ready)
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _http_head(head)
                if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            except BaseException:
                writer.close()
                raise
        if headers.get(b"connection", b"").lower() == b"close":
            writer.close()
        else:
            self._idle.append((reader, writer))
        if status != 200:
            raise HttpStatusError(status, body)
        return body

    async def _connect(self, wait_for_ready: bool) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self._host, self._port)
            except ConnectionRefusedError:
                if not wait_for_ready:
                    raise
                await asyncio.sleep(0.1)
                continue
            self._all.append(writer)
            return reader, writer

    async def close(self) -> None:
        for writer in self._all:
            writer.close()
        self._all.clear()
        self._idle.clear()


def _http_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)
