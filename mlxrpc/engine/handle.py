"""The caller's side of a request: a passive channel fed from the engine thread.

A handle knows nothing of the engine: it holds the chunks that arrived, the
waiter of its one reader, the loop they live on, and a close callback (the
engine's slot release). The request's lifecycle (admit, stream, abort,
release) is ``Engine.generate``; the core only pushes into handles.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import EngineError
from .types import Chunk


class RequestHandle:
    """One request's chunks, read with ``next_chunks``.

    Reading raises ``EngineError`` if the request failed; the last chunk
    carries ``finish``. The handle closes (and calls ``on_close`` once) when
    its end arrives or when ``close()`` is called, whichever comes first.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, request_id: str, model_id: str = "",
                 owner: str = "", on_close: Callable[[RequestHandle], None] | None = None) -> None:
        self.loop = loop
        self.request_id = request_id
        self.model_id = model_id
        # The credential that started it: who may abort it besides an admin.
        self.owner = owner
        self._on_close = on_close
        self._items: deque[Chunk | EngineError] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False  # no more items will arrive

    async def next_chunks(self) -> list[Chunk]:
        """Every chunk that is ready (waiting for at least one); [] at the end.

        A consumer slower than the engine thus gets the backlog in one go and
        can send it as one message, instead of falling further behind.
        """
        while not self._items:
            if self._closed:
                return []
            self._waiter = self.loop.create_future()
            await self._waiter
        chunks: list[Chunk] = []
        while self._items:
            item = self._items[0]
            if isinstance(item, EngineError):
                if chunks:
                    break  # the error comes on the next read, after these chunks
                self._items.popleft()
                raise item
            chunks.append(self._items.popleft())
        return chunks

    @property
    def finished(self) -> bool:
        return self._closed

    def push(self, item: Chunk | EngineError) -> None:
        """Adds a chunk or the request's error (caller's loop only); ignored once closed."""
        if self._closed:
            return
        self._items.append(item)
        if isinstance(item, EngineError) or item.finish is not None:
            self.close()
        self._wake()

    def close(self) -> None:
        """No more items will arrive (idempotent); calls ``on_close`` the first time."""
        if self._closed:
            return
        self._closed = True
        if self._on_close is not None:
            self._on_close(self)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def deliver(items: list[tuple[RequestHandle, Any]]) -> None:
    """Runs on the caller's loop: hands one engine step's items to their handles."""
    for handle, item in items:
        handle.push(item)
