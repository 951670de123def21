"""Engine.generate is a request's whole lifecycle: however its consumer stops,
the request leaves the batch and frees its slot; refusals reserve nothing."""

from __future__ import annotations

import asyncio

import pytest

from mlxrpc.engine.errors import EngineError, ErrorCode
from mlxrpc.engine.types import (
    ChatPrompt,
    GenerationRequest,
    ImageInput,
    StoppingParams,
    TextPrompt,
)

from .conftest import Stack


def _endless(request_id: str = "") -> GenerationRequest:
    return GenerationRequest(model="default", prompt=TextPrompt("Hello"), request_id=request_id,
                             stopping=StoppingParams(max_tokens=4096, ignore_eos=True))


@pytest.fixture
def engine_stack(make_stack) -> Stack:
    return make_stack(http=False)


async def test_closing_the_stream_aborts_the_request_and_frees_its_slot(engine_stack: Stack) -> None:
    engine = engine_stack.engine
    request = _endless()
    stream = engine.generate(request)
    assert (await anext(stream))[0].token_ids
    assert request.request_id and request.model == "llama"  # resolved in place for the caller
    assert engine.stats().in_flight == 1
    await stream.aclose()
    assert engine.stats().in_flight == 0
    engine_stack.wait_idle()  # the core took the row out of the batch
    assert not engine.abort(request.request_id, admin=True)


async def test_a_cancelled_consumer_frees_the_slot(engine_stack: Stack) -> None:
    engine = engine_stack.engine
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(_endless("cancel-me")):
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.stats().in_flight == 0
    engine_stack.wait_idle()


async def test_abort_ends_the_stream_cancelled(engine_stack: Stack) -> None:
    engine = engine_stack.engine
    stream = engine.generate(_endless("to-abort"), owner="alice")
    await anext(stream)
    with pytest.raises(EngineError) as refused:
        engine.abort("to-abort", caller="mallory")
    assert refused.value.code is ErrorCode.PERMISSION_DENIED
    assert engine.abort("to-abort", caller="alice")
    with pytest.raises(EngineError) as ended:
        async for _ in stream:
            pass
    assert ended.value.code is ErrorCode.CANCELLED and engine.stats().in_flight == 0
    engine_stack.wait_idle()


async def test_a_refused_request_reserves_nothing_and_fetches_nothing(engine_stack: Stack) -> None:
    fetched: list[ImageInput] = []

    async def load_images(images: list[ImageInput]) -> None:
        fetched.extend(images)

    prompt = ChatPrompt([{"role": "user", "content": [{"type": "image"}]}],
                        images=[ImageInput(url="https://example.invalid/a.png")])
    with pytest.raises(EngineError) as refused:
        async for _ in engine_stack.engine.generate(GenerationRequest(model="llama", prompt=prompt),
                                                    load_images=load_images):
            pass
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT and "does not accept images" in refused.value.message
    assert not fetched and engine_stack.engine.stats().in_flight == 0
