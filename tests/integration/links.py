"""A loopback TCP link between the gateway and Triton that can be slowed down or made to stall."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class StallingForwarder:
    """A loopback TCP forwarder to ``upstream`` that can be slowed down or switched to stall.

    Forwarding, it pipes bytes both ways, each chunk from the gateway to the
    backend ``delay_s`` late (0: at once). Stalled, it accepts connections and
    reads every byte but forwards none, in either direction, on existing and
    new connections alike: to the gateway the backend has hung (a new
    connection never even gets HTTP/2 settings). ``stall(drop=True)`` also
    closes the connections open now, so the next call needs a new one.
    Switching back closes every connection, since their byte streams now have
    holes.
    """

    def __init__(self, upstream: str, *, delay_s: float = 0.0) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self.delay_s = delay_s
        self.stalled = False
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stalling-forwarder", daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.url = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stall(self, stalled: bool = True, *, drop: bool = False) -> None:
        self._call(self._set(stalled, drop))

    def close(self) -> None:
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    async def _set(self, stalled: bool, drop: bool) -> None:
        if drop or (self.stalled and not stalled):
            for writer in list(self._writers):
                writer.close()
        self.stalled = stalled

    async def _close(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Closed transports end every handler; none is cancelled (asyncio logs a cancelled handler).
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.stalled:
                await self._pipe(reader, None, 0.0)
                return
            up_reader, upstream = await asyncio.open_connection(*self._upstream)
            self._writers.add(upstream)
            pipes = [
                asyncio.create_task(self._pipe(reader, upstream, self.delay_s)),
                asyncio.create_task(self._pipe(up_reader, writer, 0.0)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                writer.close()
                upstream.close()
                await asyncio.wait(pipes, timeout=5)
        except (ConnectionError, OSError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._writers.discard(end)
                    end.close()
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None, delay_s: float) -> None:
        """Copies ``source`` to ``sink`` (each chunk ``delay_s`` late, in order) until either end closes."""
        loop = asyncio.get_running_loop()
        late: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def deliver() -> None:
            assert sink is not None
            while (item := await late.get()) is not None:
                due, data = item
                await asyncio.sleep(max(due - loop.time(), 0.0))
                if not self.stalled and not sink.is_closing():
                    sink.write(data)

        delivery = asyncio.create_task(deliver()) if sink is not None and delay_s > 0 else None
        try:
            while data := await source.read(65536):
                if self.stalled or sink is None or sink.is_closing():
                    continue  # swallowed: the peer waits for an answer that never comes
                if delivery is not None:
                    late.put_nowait((loop.time() + delay_s, data))
                else:
                    sink.write(data)
                    await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if delivery is not None:
                late.put_nowait(None)
                delivery.cancel()
                await asyncio.gather(delivery, return_exceptions=True)
