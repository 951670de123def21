"""Shared prefixes among concurrent requests (--use-paged-cache)."""

from __future__ import annotations

import asyncio

import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

SYSTEM = "You are a coding agent. Tools: read_file, write_file, run_shell, search. Rules follow. " * 12


def _request(i: int) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="llama")
    request.chat.messages.add(role="system").content.add(text=SYSTEM)
    request.chat.messages.add(role="user").content.add(text=f"Task {i}: fix the failing test.")
    request.stopping.max_tokens, request.stopping.ignore_eos = 6, True
    request.sampling.temperature = 0.0
    return request


async def _wave(target: str, n: int) -> list[pb.GenerateResponse]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        return list(await asyncio.gather(*(stub.Generate(_request(i)) for i in range(n))))


async def test_requests_arriving_together_prefill_their_shared_system_prompt_once(make_stack) -> None:
    n = 8
    shared = make_stack(http=False, use_paged_cache=True, prefill_batch_size=8)
    plain = make_stack(http=False, prefill_batch_size=8)
    with_sharing = await _wave(shared.grpc_target, n)
    without = await _wave(plain.grpc_target, n)
    prompt = [r.finish.usage.prompt_tokens for r in with_sharing]
    computed = sum(p - r.finish.usage.cached_tokens for p, r in zip(prompt, with_sharing, strict=True))
    system = min(prompt) - 40  # the shared part: all but the user turn (~27 tokens)
    assert system > 300
    # Without sharing every request prefills the system prompt itself.
    assert sum(r.finish.usage.cached_tokens for r in without) == 0
    # With it, once (plus each request's own turn).
    assert computed < max(prompt) + n * 40, (computed, prompt)
    cached = [r.finish.usage.cached_tokens for r in with_sharing]
    assert sum(c > system for c in cached) == n - 1, (cached, prompt)
    assert [r.token_ids for r in with_sharing] == [r.token_ids for r in without]


async def test_a_request_arriving_while_another_decodes_reuses_its_prompt(make_stack) -> None:
    stack = make_stack(http=False, use_paged_cache=True)
    first = _request(0)
    first.stopping.max_tokens = 200
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        decoding = stub.StreamGenerate(first)
        async for message in decoding:
            if message.token_ids:
                break  # its prompt is in; it keeps decoding
        second = await stub.Generate(_request(1))
        assert second.finish.usage.cached_tokens > second.finish.usage.prompt_tokens - 40
        decoding.cancel()
