"""RequestHandle hand-off semantics, without MLX: a passive channel."""

from __future__ import annotations

import asyncio

import pytest

from mlxrpc.engine.errors import EngineError, ErrorCode
from mlxrpc.engine.handle import RequestHandle
from mlxrpc.engine.types import Chunk, Finish, StopReason, Timings, Usage
from mlxrpc.service.convert import merge_chunks


def _handle(closed: list[RequestHandle]) -> RequestHandle:
    return RequestHandle(asyncio.get_running_loop(), "r", "m", on_close=closed.append)


async def test_backlog_is_returned_in_one_go_and_merges_in_order() -> None:
    closed: list[RequestHandle] = []
    handle = _handle(closed)
    done = Finish(StopReason.LENGTH, Usage(1, 3), Timings())
    for i, finish in ((1, None), (2, None), (3, done)):
        handle.push(Chunk(text=f"t{i}", token_ids=[i], finish=finish))
    chunks = await handle.next_chunks()
    assert [c.token_ids for c in chunks] == [[1], [2], [3]]
    merged = merge_chunks(chunks)
    assert (merged.text, merged.token_ids, merged.finish) == ("t1t2t3", [1, 2, 3], done)
    assert await handle.next_chunks() == []
    assert closed == [handle]


async def test_an_error_is_raised_after_the_chunks_before_it() -> None:
    closed: list[RequestHandle] = []
    handle = _handle(closed)
    handle.push(Chunk(text="a", token_ids=[1]))
    handle.push(EngineError(ErrorCode.INTERNAL, "boom"))
    assert closed == [handle]
    assert [c.text for c in await handle.next_chunks()] == ["a"]
    with pytest.raises(EngineError, match="boom"):
        await handle.next_chunks()


async def test_close_calls_back_once_wakes_the_reader_and_drops_later_items() -> None:
    closed: list[RequestHandle] = []
    handle = _handle(closed)
    reader = asyncio.ensure_future(handle.next_chunks())
    await asyncio.sleep(0)  # let the reader park on its waiter
    handle.close()
    handle.close()
    handle.push(Chunk(text="late"))
    assert await reader == [] and closed == [handle] and handle.finished
