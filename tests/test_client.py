"""The typed Python client (mlxrpc.client), sync and async."""

from __future__ import annotations

import grpc
import pytest

from mlxrpc.client import AsyncClient, Client, MlxrpcError

from .conftest import Stack


def test_sync_client_generates_streams_and_raises(stack: Stack) -> None:
    with Client(stack.grpc_target, timeout=30) as client:
        assert {m.id for m in client.models()} == {"llama", "qwen"}
        done = client.generate("Hello", model="llama", max_tokens=5, temperature=0.0)
        assert done.finish_reason == "length" and done.usage.completion_tokens == 5
        deltas = list(client.stream([{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0.0))
        assert deltas[-1].finish_reason == "length" and deltas[-1].usage.completion_tokens == 5
        by_ids = client.generate([5, 6, 7], max_tokens=2)
        assert by_ids.usage.prompt_tokens == 3
        with pytest.raises(MlxrpcError) as caught:
            client.generate("x", max_tokens=2, temperature=-1.0)
        assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and caught.value.field == "temperature"
        with pytest.raises(MlxrpcError) as caught:
            list(client.stream("x", model="missing"))
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


async def test_async_client_and_early_exit_frees_the_slot(stack: Stack) -> None:
    async with AsyncClient(stack.grpc_target) as client:
        done = await client.generate("Hello", max_tokens=3)
        assert done.usage.completion_tokens == 3
        async for delta in client.stream("Once", max_tokens=200, seed=1):
            assert delta.token_ids
            break
    stack.wait_idle()
    assert stack.engine.stats().in_flight == 0
