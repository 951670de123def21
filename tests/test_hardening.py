"""Fault isolation at the edges: request limits, image bombs, SSRF, status sizes,
and the process lifecycle of `mlxrpc serve` (orphans, drain, grace cut, engine death)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mlxrpc.engine.errors import EngineError, ErrorCode
from mlxrpc.engine.types import ChatPrompt, ImageInput
from mlxrpc.engine.vision import decode_images
from mlxrpc.launcher import ServeProcess
from mlxrpc.limits import MAX_JSON_DEPTH, json_depth
from mlxrpc.service import images as image_fetch
from mlxrpc.service.limits import check_limits, check_tokenize_limits
from mlxrpc.service.status import MAX_MESSAGE_CHARS, to_status
from mlxrpc.settings import Settings
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import LoopThread, Stack
from .helpers import text_request

# ------------------------------------------------------------------ request limits


def chat(*texts: str, kwargs: dict | str | None = None) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="llama")
    for text in texts:
        request.chat.messages.add(role="user").content.add(text=text)
    if kwargs is not None:
        request.chat.template_kwargs_json = kwargs if isinstance(kwargs, str) else json.dumps(kwargs)
    return request


def refusal(check: Callable[[], None]) -> EngineError:
    with pytest.raises(EngineError) as caught:
        check()
    assert caught.value.code is ErrorCode.INVALID_ARGUMENT
    return caught.value


def deep(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(("text", "depth"), [
    ("", 0), ("1", 0), ("{}", 1), ("[[]]", 2), ('{"a": [1, {"b": "[[[["}]}', 3),
    ('"\\"[[["', 0), ('{"a":"\\\\"}', 1), ('[[["x\\"]]]"]]]', 3), (deep(1000), 1000),
    ('"' + "\\" * 101 + '"' + "[[", 0),  # an odd run of backslashes escapes the quote: still inside
])
def test_json_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_json_depth_is_linear_on_hostile_input() -> None:
    started = time.perf_counter()
    for text in ('"\\' * 1_000_000, "[" * 2_000_000, '"' + "a" * 2_000_000, "[]" * 1_000_000):
        json_depth(text)
    assert time.perf_counter() - started < 5


def test_prompt_bytes_messages_and_images_are_capped() -> None:
    settings = Settings(max_prompt_bytes=100, max_messages=3, max_images=1)
    check_limits(chat("x" * 50, "y" * 50), settings)
    assert refusal(lambda: check_limits(chat("x" * 60, "y" * 41), settings)).field == "messages"
    assert refusal(lambda: check_limits(pb.GenerateRequest(text="é" * 51), settings)).field == "text"
    assert refusal(lambda: check_limits(chat("a", "b", "c", "d"), settings)).field == "messages"
    two_images = chat("look")
    for _ in range(2):
        two_images.chat.messages[0].content.add().image.url = "https://example.com/x.png"
    assert refusal(lambda: check_limits(two_images, settings)).field == "images"
    tokenize = pb.TokenizeRequest(text="x" * 101)
    assert refusal(lambda: check_tokenize_limits(tokenize, settings)).field == "text"


@pytest.mark.parametrize("where", ["schema", "tool", "kwargs", "tool_call"])
def test_deep_json_is_refused_naming_its_field(where: str) -> None:
    request = chat("hi")
    fields = {"schema": "response_format.json_schema", "tool": "tools[0].function.parameters",
              "kwargs": "chat_template_kwargs", "tool_call": "messages[1].tool_calls[0].arguments"}
    text = deep(MAX_JSON_DEPTH + 1)
    if where == "schema":
        request.response_format.json_schema.schema_json = text
    elif where == "tool":
        request.tools.add(type="function").function.parameters_json = text
    elif where == "kwargs":
        request.chat.template_kwargs_json = text
    else:
        request.chat.messages.add(role="assistant").tool_calls.add(name="f", arguments_json=text)
    assert refusal(lambda: check_limits(request, Settings())).field == fields[where]
    request_ok = chat("hi")
    request_ok.response_format.json_schema.schema_json = deep(MAX_JSON_DEPTH)
    check_limits(request_ok, Settings())


@pytest.mark.parametrize("kwargs", [
    {"chat_template": "{{ 'x' * 100000000 }}"},
    {"tools_template": "{% for i in range(10**9) %}{% endfor %}"},
    '{"chat\\u005ftemplate": "{{ 1 }}"}',  # the same key, escaped
])
def test_client_chat_templates_need_the_operator(kwargs: dict | str) -> None:
    error = refusal(lambda: check_limits(chat("hi", kwargs=kwargs), Settings()))
    assert error.field.startswith("chat_template_kwargs.") and "--allow-request-chat-template" in error.message
    check_limits(chat("hi", kwargs=kwargs), Settings(allow_request_chat_template=True))
    check_limits(chat("hi", kwargs={"enable_thinking": False}), Settings())


def test_limits_over_grpc(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        cases = [
            (pb.GenerateRequest(model="llama", text="x" * (4 * 1024 * 1024 + 1)), "text"),
            (chat("hi", kwargs={"chat_template": "{{ 'x' * 100000000 }}"}), "chat_template_kwargs.chat_template"),
        ]
        schema = chat("hi")
        schema.response_format.json_schema.schema_json = '{"type":"object","properties":' * 1000
        cases.append((schema, "response_format.json_schema"))
        for request, field in cases:
            for call in (stub.Generate, lambda r: list(stub.StreamGenerate(r))):
                started = time.perf_counter()
                with pytest.raises(grpc.RpcError) as caught:
                    call(request)
                assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
                assert time.perf_counter() - started < 5
                assert violated_field(caught.value) == field
        tokenize = pb.TokenizeRequest(model="llama", text="x" * (4 * 1024 * 1024 + 1))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Tokenize(tokenize)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def violated_field(error: grpc.RpcError) -> str:
    """The field of the google.rpc.BadRequest detail of a failed call."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return ""


def test_an_allowed_client_template_renders(make_stack) -> None:
    s = make_stack(allow_request_chat_template=True)
    with grpc.insecure_channel(s.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        request = pb.TokenizeRequest(model="llama")
        request.chat.messages.add(role="user").content.add(text="Hello there")
        request.chat.template_kwargs_json = json.dumps({"chat_template": "<<{{ messages[0].content }}>>"})
        rendered = stub.Tokenize(request).token_ids
        plain = stub.Tokenize(pb.TokenizeRequest(model="llama", text="<<Hello there>>",
                                                 add_special_tokens=False)).token_ids
    assert list(rendered) == list(plain)


# ------------------------------------------------------------------ status size


def test_status_messages_are_capped() -> None:
    error = EngineError(ErrorCode.NOT_FOUND, "model '" + "m" * 100_000 + "' not found", field="model")
    status = to_status(error)
    assert len(status.details) == MAX_MESSAGE_CHARS and status.details.endswith("…")
    assert sum(len(value) for _, value in status.trailing_metadata) < 4096


def test_a_huge_model_name_is_not_found_not_resource_exhausted(stack: Stack) -> None:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        for call in (stub.Generate, lambda r: list(stub.StreamGenerate(r))):
            with pytest.raises(grpc.RpcError) as caught:
                call(text_request(model="m" * 100_000))
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            assert len(caught.value.details()) <= MAX_MESSAGE_CHARS
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfo(pb.ModelInfoRequest(model="m" * 100_000))
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


# ------------------------------------------------------------------ image bombs


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (its pixel data is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(4096)))
            + chunk(b"IEND", b""))


def small_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def prompt_of(*datas: bytes) -> ChatPrompt:
    return ChatPrompt(messages=[{"role": "user", "content": "hi"}], images=[ImageInput(data=d) for d in datas])


def test_oversized_images_are_refused_from_their_header() -> None:
    prompt = prompt_of(small_png(), *[png_claiming(12000, 12000)] * 8)
    started = time.perf_counter()
    error = refusal(lambda: decode_images(prompt, 4096 * 4096))
    assert error.field == "images[1]" and "12000x12000" in error.message
    assert time.perf_counter() - started < 1, "refused from the header, without decoding"
    assert decode_images(prompt_of(small_png()), 4096 * 4096)[0].size == (8, 6)


def test_decompression_bombs_are_invalid_argument() -> None:
    error = refusal(lambda: decode_images(prompt_of(png_claiming(20000, 20000)), 10**12))
    assert error.field == "images[0]" and "too large" in error.message


async def test_request_pixels_are_capped_before_the_engine() -> None:
    settings = Settings(max_image_pixels=1000 * 1000, max_request_pixels=1500 * 1000)
    images = [ImageInput(data=png_claiming(1000, 1000)), ImageInput(data=png_claiming(1000, 600))]
    with pytest.raises(EngineError) as caught:
        await image_fetch.resolve_images(images, settings)
    assert caught.value.field == "images"
    with pytest.raises(EngineError) as caught:
        await image_fetch.resolve_images([ImageInput(data=png_claiming(20000, 20000))], settings)
    assert caught.value.field == "images[0]"
    await image_fetch.resolve_images(images[:1], settings)


# ------------------------------------------------------------------ SSRF


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("1.1.1.1", True), ("2606:4700::1111", True),
    ("64:ff9b::808:808", True), ("2002:808:808::1", True), ("::ffff:8.8.8.8", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("0.1.2.3", False),
    ("224.0.0.1", False), ("240.0.0.1", False), ("255.255.255.255", False), ("198.18.0.1", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False), ("fd12:3456::1", False),
    ("fec0::1", False), ("ff02::1", False), ("ff0e::1", False), ("2001:db8::1", False),
    ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False), ("::ffff:10.0.0.1", False),
    ("::127.0.0.1", False), ("::169.254.169.254", False), ("::10.0.0.1", False),
    ("64:ff9b::a9fe:a9fe", False), ("64:ff9b::7f00:1", False), ("64:ff9b::c0a8:101", False),
    ("64:ff9b:1::a9fe:a9fe", False), ("64:ff9b:1::808:808", False),
    ("2002:a9fe:a9fe::", False), ("2002:7f00:1::1", False), ("2002:a00:1::1", False),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),  # Teredo, client 127.0.0.1
])
def test_address_classifier(address: str, public: bool) -> None:
    assert image_fetch.is_public(ipaddress.ip_address(address)) is public


@pytest.fixture
def image_server() -> Iterator[tuple[int, list[web.Request]]]:
    """A loopback image server recording every request it gets (and redirecting on /to?url=)."""
    seen: list[web.Request] = []
    body = small_png()

    async def image(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if "url" in request.query:
            raise web.HTTPFound(request.query["url"])
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", image)
    thread = LoopThread()
    runner = web.AppRunner(app)
    thread.run(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    thread.run(site.start())
    yield site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]
    thread.run(runner.cleanup())
    thread.close()


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """A fake DNS: name → answers, one answer used per lookup (the last one repeats)."""
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []

    async def lookup(host: str, port: int, family: int) -> list[tuple]:
        lookups.append(host)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(kind, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(image_fetch, "lookup_host", lookup)
    answers["_lookups"] = lookups  # type: ignore[assignment]
    return answers


async def fetch(url: str, **settings: object) -> bytes:
    image = ImageInput(url=url)
    await image_fetch.resolve_images([image], Settings(**{"image_fetch_timeout": 2.0, **settings}))
    return image.data


async def test_a_name_connects_to_the_address_it_resolved_to(image_server, dns) -> None:
    port, seen = image_server
    dns["images.test"] = ["127.0.0.1"]
    data = await fetch(f"http://images.test:{port}/a.png", allow_private_image_urls=True)
    assert data == small_png()
    assert seen[-1].host == f"images.test:{port}", "the Host header keeps the URL's name"
    assert dns["_lookups"] == ["images.test"]


async def test_private_answers_are_refused_without_connecting(image_server, dns) -> None:
    port, seen = image_server
    dns["images.test"] = ["127.0.0.1"]
    with pytest.raises(EngineError, match="private or loopback") as caught:
        await fetch(f"http://images.test:{port}/a.png")
    assert caught.value.field == "images[0]"
    for literal in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]"):
        with pytest.raises(EngineError, match="private or loopback"):
            await fetch(f"http://{literal}:{port}/a.png")
    assert seen == []


async def test_dns_rebinding_cannot_swap_the_checked_address(image_server, dns) -> None:
    """The first answer is public, every later one loopback: one lookup, so loopback is never reached."""
    port, seen = image_server
    dns["rebind.test"] = ["8.8.8.8", "127.0.0.1"]
    with pytest.raises(EngineError, match="cannot fetch"):
        await fetch(f"http://rebind.test:{port}/a.png", image_fetch_timeout=1.0)
    assert seen == [] and dns["_lookups"] == ["rebind.test"]


async def test_redirects_are_checked_like_the_first_url(image_server, dns, monkeypatch) -> None:
    port, seen = image_server
    # Here 127.0.0.1 plays a public host and 127.0.0.2 (also loopback) a private one.
    monkeypatch.setattr(image_fetch, "is_public", lambda address: str(address) == "127.0.0.1")
    dns["public.test"] = ["127.0.0.1"]
    dns["internal.test"] = ["127.0.0.2"]
    assert await fetch(f"http://public.test:{port}/r?url=/a.png") == small_png()
    for target in (f"http://internal.test:{port}/a.png", f"http://127.0.0.2:{port}/a.png"):
        with pytest.raises(EngineError, match="private or loopback"):
            await fetch(f"http://public.test:{port}/r?url={target}")
    assert [r.path for r in seen] == ["/r", "/a.png", "/r", "/r"]


# ------------------------------------------------------------------ the process: `mlxrpc serve`

LONG = 1900  # tokens: a few seconds of the demo model


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Polls ``condition`` until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a reaper counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except (FileNotFoundError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlxrpc-cache")


@pytest.fixture
def serve(cache: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
        s = ServeProcess("--max-tokens", "2000", *args, timeout=120,
                         env={"MLXRPC_CACHE_DIR": str(cache), "MLXRPC_HOST": "127.0.0.1", **(env or {})})
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()


def sidecar_pids(s: ServeProcess) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(s.process.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class SseReader:
    """Reads one streaming completion in a thread, noting when [DONE] arrived."""

    def __init__(self, base: str) -> None:
        self.response = requests.post(f"{base}/v1/completions", stream=True, timeout=60, json={
            "model": "default", "prompt": "Tell me a story", "max_tokens": LONG, "ignore_eos": True,
            "stream": True})
        assert self.response.status_code == 200, self.response.text
        self._lines = self.response.iter_lines(chunk_size=64)
        self.events = [next(line for line in self._lines if line)]
        self.done_at = float("inf")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._lines:
            if line:
                self.events.append(line)
        self.done_at = time.monotonic()

    def finish(self, timeout: float = 60) -> list[bytes]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        return self.events


def test_kill_9_takes_the_sidecars_down_and_frees_the_port(serve) -> None:
    s = serve("--workers", "2")
    workers = sidecar_pids(s)
    assert len(workers) == 2
    os.kill(s.process.pid, signal.SIGKILL)
    s.process.wait(10)
    wait_for(lambda: all(gone(pid) for pid in workers), 10, "the orphaned sidecars to exit")
    wait_for(lambda: port_free(s.http_port), 10, "the HTTP port to be free")


def test_sigterm_refuses_new_requests_at_once_while_streams_finish(serve) -> None:
    s = serve()
    stream = SseReader(f"http://127.0.0.1:{s.http_port}")
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        s.process.send_signal(signal.SIGTERM)
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        wait_for(lambda: health.Check(health_pb2.HealthCheckRequest()).status == not_serving, 10,
                 "health NOT_SERVING")
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.InferenceStub(channel).Generate(text_request(model="default", max_tokens=2))
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        refused_at = time.monotonic()
    events = stream.finish()
    assert refused_at < stream.done_at, "new requests must be refused while streams are still running"
    assert events[-1] == b"data: [DONE]"
    assert json.loads(events[-2][len(b"data: "):])["choices"][0]["finish_reason"] == "length"
    assert s.process.wait(60) == 0


def test_streams_past_the_grace_period_end_with_an_error(serve) -> None:
    s = serve("--grace-period", "1")
    sse = SseReader(f"http://127.0.0.1:{s.http_port}")
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        stream = pb_grpc.InferenceStub(channel).StreamGenerate(
            text_request(model="default", max_tokens=LONG, ignore_eos=True))
        next(stream)
        s.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in caught.value.details()
    events = sse.finish()
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: "):])["error"]
    assert error["code"] == "server_shutting_down" and "shutting down" in error["message"]
    assert s.process.wait(30) == 0


def test_the_engine_dying_ends_every_stream_and_exits_70(serve) -> None:
    s = serve(env={"MLXRPC_TEST_FAULTS": "engine_death_after_tokens=300"})
    workers = sidecar_pids(s)
    with grpc.insecure_channel(f"127.0.0.1:{s.grpc_port}") as channel:
        stream = pb_grpc.InferenceStub(channel).StreamGenerate(
            text_request(model="default", max_tokens=LONG, ignore_eos=True))
        next(stream)
        sse = SseReader(f"http://127.0.0.1:{s.http_port}")
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    events = sse.finish()
    assert events[-1] == b"data: [DONE]"
    assert json.loads(events[-2][len(b"data: "):])["error"]["code"] == "engine_failed"
    assert s.process.wait(30) == 70
    wait_for(lambda: all(gone(pid) for pid in workers), 10, "the sidecars to exit")
    assert "the engine failed" in "".join(s.log)


async def test_the_sidecar_cuts_its_own_streams_at_the_end_of_its_grace(make_stack) -> None:
    """A standalone gateway draining: its streams outlive its grace period and end in-band."""
    import aiohttp

    from mlxrpc.gateway.app import create_app, start_app

    s = make_stack(http=False, max_tokens=2000)
    runner, port = await start_app(create_app([s.grpc_target], 1 << 20), "127.0.0.1", 0, grace=0.5)
    async with aiohttp.ClientSession() as session:
        async with session.post(f"http://127.0.0.1:{port}/v1/completions", json={
                "model": "llama", "prompt": "Tell me a story", "max_tokens": LONG, "ignore_eos": True,
                "stream": True}) as response:
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            cleanup = asyncio.get_running_loop().create_task(runner.cleanup())
            events = [line.strip() async for line in response.content if line.strip()]
        await cleanup
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: "):])["error"]
    assert error["code"] == "server_shutting_down" and "shutting down" in error["message"]
