"""Fault injection: whatever one request or the model's output does, only that
request fails; the engine's own death ends every stream at once; a sidecar
outlives its engine and serves again when one is back."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import grpc
import openai
import pytest

from mlxrpc.launcher import ServeProcess
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack
from .helpers import text_request


@pytest.fixture
async def stub(stack: Stack):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def _forced_output(text: str) -> dict:
    """A response_format that makes even a random model write exactly ``text`` (as a JSON string)."""
    return {"type": "json_schema", "json_schema": {"name": "forced", "schema": {"type": "string", "const": text}}}


@pytest.mark.parametrize("body", ["1", "[1]", '"x"', "{}", '{"name": 5}', "[{\"name\": []}]", "{{{"])
def test_model_output_that_is_not_a_tool_call_object_fails_nothing(client: openai.OpenAI, body: str) -> None:
    """A model writing tool-call markers around garbage gets its text back as content."""
    reply = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=40, tools=TOOLS,
        response_format=_forced_output(f"<tool_call>{body}</tool_call>"))
    choice = reply.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert json.loads(choice.message.content) == f"<tool_call>{body}</tool_call>"
    assert client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], max_tokens=2).usage.completion_tokens == 2


async def test_a_grammar_failing_at_decode_time_fails_only_its_request(stub, stack: Stack) -> None:
    """A schema that compiles but whose lexer explodes mid-generation: that request
    ends INVALID_ARGUMENT (the request's grammar, not a server fault); four streams beside it finish normally."""
    streams = [stub.StreamGenerate(text_request(f"s{i}", max_tokens=24, ignore_eos=True)) for i in range(4)]
    for call in streams:
        await call.read()
    doomed = text_request("x", max_tokens=16)
    pattern = "^(x{1000}){1000}$"
    doomed.response_format.json_schema.schema_json = json.dumps({"type": "string", "pattern": pattern})
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(doomed)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert pattern not in caught.value.details() and len(caught.value.details()) < 200
    for call in streams:
        last = None
        while (message := await call.read()) is not grpc.aio.EOF:
            last = message
        assert last is not None and last.finish.usage.completion_tokens == 24


async def test_core_death_ends_sse_streams_in_band_within_a_second(make_stack) -> None:
    dying = make_stack()
    body = {"model": "llama", "prompt": "x", "max_tokens": 256, "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as session:
        responses = [await session.post(f"{dying.http_base}/v1/completions", json=body) for _ in range(4)]
        for response in responses:
            assert response.status == 200
            await response.content.readline()
        dying.engine.inject_core_fault(after_tokens=1)
        started = time.perf_counter()
        for response in responses:
            text = (await response.read()).decode()
            events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]"
            assert json.loads(events[-2])["error"]["code"]
        assert time.perf_counter() - started < 1.0
        async with session.get(f"{dying.http_base}/health") as health:
            assert health.status == 503
        async with session.post(f"{dying.http_base}/v1/completions", json={**body, "stream": False}) as refused:
            assert refused.status == 503


async def test_core_death_fails_queued_requests_unavailable_too(make_stack) -> None:
    """One running stream and three queued behind it (one batch slot): the core's
    death ends all four UNAVAILABLE, and a request after it is refused the same way."""
    dying = make_stack(http=False, max_num_seqs=1, prefill_batch_size=1)
    async with grpc.aio.insecure_channel(dying.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        running = stub.StreamGenerate(text_request("r", max_tokens=256, ignore_eos=True))
        await running.read()
        queued = [stub.StreamGenerate(text_request(f"q{i}", max_tokens=4)) for i in range(3)]
        deadline = time.monotonic() + 10
        while dying.engine.stats().waiting < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling the engine's queue, bounded by the deadline
        assert dying.engine.stats().waiting == 3
        dying.engine.inject_core_fault(after_tokens=1)
        for call in (running, *queued):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                while await call.read() is not grpc.aio.EOF:
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(text_request(max_tokens=2))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_client_disconnects_mid_stream_free_every_slot(stack: Stack) -> None:
    """200 streams dropped after their first event: in-flight returns to 0 and the
    engine answers exactly as before."""
    body = {"model": "llama", "prompt": "Hello", "max_tokens": 64, "temperature": 0, "ignore_eos": True}
    async with aiohttp.ClientSession() as session:
        async def reference() -> str:
            async with session.post(f"{stack.http_base}/v1/completions", json={**body, "max_tokens": 8}) as r:
                return (await r.json())["choices"][0]["text"]

        before = await reference()

        async def drop() -> None:
            async with session.post(f"{stack.http_base}/v1/completions", json={**body, "stream": True}) as r:
                assert r.status == 200
                await r.content.readline()
            # leaving the block closes the connection mid-stream

        for _ in range(10):
            await asyncio.gather(*(drop() for _ in range(20)))
        deadline = time.monotonic() + 10
        while stack.engine.stats().in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert stack.engine.stats().in_flight == 0
        stack.wait_idle()
        assert await reference() == before


async def test_sidecar_survives_its_engine_and_serves_again(tmp_path, model_dir) -> None:
    """kill -9 of a standalone engine: streams end in-band at once, requests get
    503 promptly; a new engine on the same address is picked up."""
    from mlxrpc.gateway.app import create_app, start_app

    engine = ServeProcess("--no-http", "--model", f"llama={model_dir}", "--host", "127.0.0.1")
    address = f"127.0.0.1:{engine.grpc_port}"
    runner, port = await start_app(create_app([address], 1 << 20), "127.0.0.1", 0, grace=1.0)
    base = f"http://127.0.0.1:{port}"
    body = {"model": "llama", "prompt": "x", "max_tokens": 200, "ignore_eos": True, "stream": True}
    restarted = None
    try:
        async with aiohttp.ClientSession() as session:
            streams = [await session.post(f"{base}/v1/completions", json=body) for _ in range(4)]
            for response in streams:
                await response.content.readline()
            engine.kill()
            started = time.perf_counter()
            for response in streams:
                text = (await response.read()).decode()
                assert text.rstrip().endswith("data: [DONE]") and '"error"' in text
            assert time.perf_counter() - started < 2.0
            async with session.post(f"{base}/v1/completions", json={**body, "stream": False}) as r:
                assert r.status == 503
            restarted = ServeProcess("--no-http", "--model", f"llama={model_dir}", "--host", "127.0.0.1",
                                     "--grpc-port", str(engine.grpc_port))
            deadline = time.monotonic() + 30
            status = 0
            while time.monotonic() < deadline:
                async with session.post(f"{base}/v1/completions",
                                        json={**body, "stream": False, "max_tokens": 2}) as r:
                    status = r.status
                if status == 200:
                    break
                await asyncio.sleep(0.2)  # polling a reconnect, bounded by the deadline
            assert status == 200
    finally:
        await runner.cleanup()
        engine.kill()
        if restarted is not None:
            restarted.stop()


async def test_unknown_request_bytes_are_invalid_argument(stack: Stack) -> None:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        raw = channel.unary_unary("/mlxrpc.v1.Inference/Generate",
                                  request_serializer=None, response_deserializer=None)
        for payload in (b"\x0a\x05ab", b"\x1a\x02\xff\xfe", b"\xff\xff\xff"):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(payload, timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub = pb_grpc.InferenceStub(channel)
        assert (await stub.Generate(text_request(max_tokens=2))).finish.usage.completion_tokens == 2
