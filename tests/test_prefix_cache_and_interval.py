"""Prefix (prompt) cache reuse and --stream-interval framing."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import requests

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

SYSTEM = "You are a helpful assistant who answers briefly and precisely. " * 6


def chat(question: str, max_tokens: int = 12) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="llama")
    request.chat.messages.add(role="system").content.add(text=SYSTEM)
    request.chat.messages.add(role="user").content.add(text=question)
    request.stopping.max_tokens, request.stopping.ignore_eos = max_tokens, True
    request.sampling.temperature = 0.0
    return request


async def run(target: str, requests_: list[pb.GenerateRequest]) -> list[pb.GenerateResponse]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return list(await asyncio.gather(*(stub.Generate(r) for r in requests_)))


async def test_shared_system_prompt_is_served_from_the_cache_with_identical_output(make_stack) -> None:
    cached = make_stack(http=False)
    uncached = make_stack(http=False, prompt_cache_size=0)
    (first,) = await run(cached.grpc_target, [chat("What is MLX?")])
    assert first.finish.usage.cached_tokens == 0
    (second,) = await run(cached.grpc_target, [chat("And what is gRPC?")])
    assert second.finish.usage.cached_tokens > len(SYSTEM) // 8
    assert second.finish.usage.cached_tokens < second.finish.usage.prompt_tokens
    (reference,) = await run(uncached.grpc_target, [chat("And what is gRPC?")])
    assert reference.finish.usage.cached_tokens == 0
    assert second.text == reference.text


async def test_cache_reuse_is_correct_under_batching(make_stack) -> None:
    cached = make_stack(http=False)
    uncached = make_stack(http=False, prompt_cache_size=0)
    await run(cached.grpc_target, [chat("warm the cache")])
    questions = [chat(f"Question number {i}?") for i in range(5)]
    with_cache = await run(cached.grpc_target, questions)
    without = await run(uncached.grpc_target, questions)
    assert all(r.finish.usage.cached_tokens > 0 for r in with_cache)
    assert [r.text for r in with_cache] == [r.text for r in without]


async def test_cache_is_bounded_by_entries(make_stack) -> None:
    small = make_stack(http=False, prompt_cache_size=1)
    other = pb.GenerateRequest(model="llama", text="Completely different words here " * 4)
    other.stopping.max_tokens = 4
    await run(small.grpc_target, [chat("first")])
    await run(small.grpc_target, [other])  # evicts the chat entry
    (again,) = await run(small.grpc_target, [chat("second")])
    assert again.finish.usage.cached_tokens == 0


@pytest.mark.parametrize("interval", [1, 4])
async def test_stream_interval_groups_tokens_and_flushes_the_rest(make_stack, interval: int) -> None:
    stack = make_stack(stream_interval=interval)
    request = pb.GenerateRequest(model="llama", text="Hello")
    request.stopping.max_tokens, request.stopping.ignore_eos = 10, True
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        sizes = [len(m.token_ids) async for m in pb_grpc.InferenceStub(channel).StreamGenerate(request)]
    # A message holds `interval` tokens (or a multiple, when a lagging reader's
    # backlog is coalesced); only the last may hold the remainder.
    assert sum(sizes) == 10
    assert all(size % interval == 0 for size in sizes[:-1])
    expected = [interval] * (10 // interval) + ([10 % interval] if 10 % interval else [])
    sse = requests.post(f"{stack.http_base}/v1/completions", timeout=30, stream=True, json={
        "prompt": "Hello", "max_tokens": 10, "ignore_eos": True, "stream": True})
    events = [line for line in sse.iter_lines() if line.startswith(b"data: {")]
    assert len(events) <= len(expected)
