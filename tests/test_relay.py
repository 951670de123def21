"""The one stream relay behind every streaming REST API (gateway/http/relay.py).

A fake engine streams forever, so each API's stream is still running when the
sidecar's grace period ends (it must end in-band, in that API's own error
shape) or when the client goes away (the gRPC call must be cancelled).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest

from mlxrpc.gateway.app import create_app, start_app
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

MESSAGES = [{"role": "user", "content": "Hi"}]
APIS = {
    "chat": ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}),
    "completions": ("/v1/completions", {"model": "m", "prompt": "Hi"}),
    "anthropic": ("/v1/messages", {"model": "m", "messages": MESSAGES, "max_tokens": 10}),
    "responses": ("/v1/responses", {"model": "m", "input": "Hi"}),
}


class EndlessEngine(pb_grpc.InferenceServicer):
    """Streams one token every few milliseconds until cancelled."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def StreamGenerate(self, request: pb.GenerateRequest,  # noqa: N802 (the proto's name)
                             context: grpc.aio.ServicerContext) -> AsyncIterator[pb.GenerateStreamResponse]:
        # The call's end, seen by the server even while a write waits on flow control.
        context.add_done_callback(lambda _: self.cancelled.set())  # an endless stream only ends cancelled
        while True:
            yield pb.GenerateStreamResponse(model=request.model, text="x")
            await asyncio.sleep(0.005)


@pytest.fixture
async def engine() -> AsyncIterator[tuple[EndlessEngine, str]]:
    fake = EndlessEngine()
    server = grpc.aio.server()
    pb_grpc.add_InferenceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(None)


def _data(line: bytes) -> dict[str, Any]:
    return json.loads(line[len(b"data: "):])


@pytest.mark.parametrize("api", APIS)
async def test_streams_past_the_grace_period_end_in_band_in_each_apis_shape(
        engine: tuple[EndlessEngine, str], api: str) -> None:
    path, body = APIS[api]
    runner, port = await start_app(create_app([engine[1]], 1 << 20), "127.0.0.1", 0, grace=0.3)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}{path}", json={**body, "stream": True}) as response:
            assert response.status == 200
            await response.content.readline()
            cleanup = asyncio.get_running_loop().create_task(runner.cleanup())
            lines = [line.strip() async for line in response.content if line.strip()]
        await cleanup
    data = [line for line in lines if line.startswith(b"data: ")]
    if api in ("chat", "completions"):
        assert data[-1] == b"data: [DONE]"
        error = _data(data[-2])["error"]
        assert (error["code"], error["type"]) == ("server_shutting_down", "server_error")
    elif api == "anthropic":
        assert lines[-2:] == [b"event: error", data[-1]]
        assert _data(data[-1]) == {"type": "error", "error": {"type": "overloaded_error",
                                                              "message": "the server is shutting down"}}
    else:
        error, failed = _data(data[-2]), _data(data[-1])
        assert (error["type"], error["code"]) == ("error", "server_shutting_down")
        assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    await asyncio.wait_for(engine[0].cancelled.wait(), 10)  # the engine was told


@pytest.mark.parametrize("api", APIS)
async def test_a_client_going_away_cancels_the_call(engine: tuple[EndlessEngine, str], api: str) -> None:
    path, body = APIS[api]
    runner, port = await start_app(create_app([engine[1]], 1 << 20), "127.0.0.1", 0, grace=0.3)
    try:
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"http://127.0.0.1:{port}{path}", json={**body, "stream": True})
            await response.content.readline()
            response.close()
        await asyncio.wait_for(engine[0].cancelled.wait(), 10)
    finally:
        await runner.cleanup()
