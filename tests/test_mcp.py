"""MCP tools (--mcp-config): config parsing, real MCP servers over stdio and
streamable HTTP, the REST and gRPC routes, reconnection, and the server-side
tool loop end to end on the demo model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest

from mlxrpc.cli import main as cli_main
from mlxrpc.gateway.mcp.translate import McpCallDeltas, mcp_calls
from mlxrpc.service.mcp import McpConfigError, cap, parse_config, result_text
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack, start_stack, stop_stack
from .mcp_servers import calc_server

DEMO_SERVER = Path(__file__).parent / "mcp_servers" / "demo_server.py"
ASK = [{"role": "user", "content": "What time zone?"}]
RECORD_ONLY = {"type": "mcp", "server_label": "demo", "allowed_tools": ["record"]}


# ------------------------------------------------------------------ config parsing


def test_vllm_mlx_format_is_parsed() -> None:
    (stdio, http, sse) = parse_config({"servers": {
        "fs": {"transport": "stdio", "command": "npx", "args": ["-y", "server"], "env": {"A": "1"},
               "timeout": 5},
        "web": {"transport": "streamable-http", "url": "https://example.com/mcp", "enabled": False},
        "old": {"transport": "sse", "url": "http://localhost:9/sse", "headers": {"X-Key": "k"}},
    }})
    assert (stdio.name, stdio.transport, stdio.command, stdio.args, stdio.env, stdio.timeout) == (
        "fs", "stdio", "npx", ["-y", "server"], {"A": "1"}, 5.0)
    assert (http.transport, http.url, http.enabled) == ("streamable-http", "https://example.com/mcp", False)
    assert (sse.transport, sse.headers) == ("sse", {"X-Key": "k"})


def test_common_mcp_servers_format_infers_the_transport() -> None:
    servers = parse_config({"mcpServers": {
        "files": {"command": "uvx", "args": ["mcp-server-fetch"]},
        "remote": {"url": "https://example.com/mcp"},
        "legacy": {"url": "https://example.com/sse"},
        "typed": {"type": "http", "url": "https://example.com/x"},
        "off": {"command": "x", "disabled": True},
    }})
    assert [(s.name, s.transport) for s in servers] == [
        ("files", "stdio"), ("remote", "streamable-http"), ("legacy", "sse"), ("typed", "streamable-http"),
        ("off", "stdio")]
    assert servers[-1].enabled is False


@pytest.mark.parametrize(("data", "message"), [
    ([], '"servers" or "mcpServers"'),
    ({"servers": {}, "mcpServers": {}}, '"servers" or "mcpServers"'),
    ({"servers": []}, "must map server names"),
    ({"servers": {"a__b": {"command": "x"}}}, "server name 'a__b'"),
    ({"servers": {"a b": {"command": "x"}}}, "server name 'a b'"),
    ({"servers": {"a": "npx"}}, "server 'a' must be a JSON object"),
    ({"servers": {"a": {"transport": "ws", "url": "ws://x"}}}, "transport must be one of"),
    ({"servers": {"a": {"transport": "stdio"}}}, "needs a command"),
    ({"servers": {"a": {"transport": "sse", "url": "file:///x"}}}, "needs an http(s) url"),
    ({"servers": {"a": {}}}, "needs an http(s) url"),
    ({"servers": {"a": {"command": "x", "args": "-y"}}}, "args must be a list of strings"),
    ({"servers": {"a": {"command": "x", "env": {"N": 1}}}}, "env must map names to strings"),
    ({"servers": {"a": {"command": "x", "timeout": 0}}}, "timeout must be a positive number"),
    ({"servers": {"a": {"command": "x", "enabled": "yes"}}}, "enabled must be true or false"),
    ({"servers": {"a": {"command": ["npx"]}}}, "command must be a string"),
])
def test_invalid_configs_are_refused_with_a_clear_message(data: Any, message: str) -> None:
    with pytest.raises(McpConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(data)


@pytest.mark.parametrize(("content", "args", "message"), [
    ("{not json", [], "is not valid JSON"),
    ('{"servers": {"a": {"transport": "stdio"}}}', [], "needs a command"),
    (None, [], "cannot read --mcp-config"),
    ('{"servers": {}}', ["--mcp-max-steps", "1"], "--mcp-max-steps must be at least 2"),
])
def test_serve_exits_on_a_bad_mcp_config(tmp_path: Path, capsys: pytest.CaptureFixture, content: str | None,
                                         args: list[str], message: str) -> None:
    path = tmp_path / "mcp.json"
    if content is not None:
        path.write_text(content)
    assert cli_main(["serve", "--mcp-config", str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_results_are_text_capped_in_bytes() -> None:
    from mcp import types

    result = types.CallToolResult(content=[types.TextContent(text="a"), types.ImageContent(
        data="AAAA", mime_type="image/png")], structured_content=None)
    assert result_text(result) == "a\n[image image/png]"
    assert result_text(types.CallToolResult(content=[], structured_content={"n": 1})) == '{"n": 1}'
    assert cap("héllo", 100) == "héllo"
    assert cap("héllo", 2) == "h\n[truncated: 5 more bytes]"  # never half a character


def test_mcp_calls_in_chat_responses_and_stream_deltas() -> None:
    call = pb.ToolEvent(call=pb.ToolCall(id="c1", name="demo__echo", arguments_json='{"text": "x"}'))
    result = pb.ToolEvent(result=pb.ToolResult(call_id="c1", name="demo__echo", content="x"))
    assert mcp_calls([call, result]) == [{"id": "c1", "type": "mcp_call", "name": "demo__echo",
                                          "arguments": '{"text": "x"}', "output": "x", "is_error": False}]
    deltas = McpCallDeltas()
    assert deltas.delta(call)["mcp_calls"][0]["index"] == 0
    assert deltas.delta(result) == {"mcp_calls": [{"index": 0, "id": "c1", "output": "x", "is_error": False}]}


# ------------------------------------------------------------------ a server with two MCP servers


class Env:
    def __init__(self, tmp: Path, stack: Stack) -> None:
        self.log = tmp / "calls.log"
        self.pid = tmp / "server.pid"
        self.stack = stack

    def calls(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


def write_config(tmp: Path, url: str, sse_url: str) -> Path:
    config = {"servers": {
        "demo": {"transport": "stdio", "command": sys.executable, "args": [str(DEMO_SERVER)], "timeout": 2,
                 "env": {"MLXRPC_TEST_MCP_LOG": str(tmp / "calls.log"),
                         "MLXRPC_TEST_MCP_PID": str(tmp / "server.pid")}},
        "calc": {"transport": "streamable-http", "url": url},
        "old": {"transport": "sse", "url": sse_url},
        "off": {"transport": "stdio", "command": "/nonexistent", "enabled": False},
    }}
    path = tmp / "mcp.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def env(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("mcp")
    with calc_server.serving() as url, calc_server.serving("sse") as sse_url:
        stack = start_stack([f"llama={model_dir}"], mcp_config=str(write_config(tmp, url, sse_url)), mcp_max_steps=2,
                            mcp_max_result_bytes=1000, max_tokens=256)
        try:
            yield Env(tmp, stack)
        finally:
            stop_stack(stack)


async def get(stack: Stack, path: str, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(stack.http_base + path, headers=headers) as r:
        return r.status, await r.json()


async def post(stack: Stack, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            stack.http_base + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_tools_of_both_servers_are_listed(env: Env) -> None:
    status, body = await get(env.stack, "/v1/mcp/tools")
    assert status == 200, body
    names = {t["name"] for t in body["tools"]}
    assert {"demo__record", "demo__echo", "demo__fail", "calc__add", "calc__shout", "old__add"} <= names
    assert body["count"] == len(body["tools"])
    add = next(t for t in body["tools"] if t["name"] == "calc__add")
    assert add["server"] == "calc" and add["description"] == "Adds two integers."
    assert set(add["parameters"]["properties"]) == {"a", "b"}
    status, body = await get(env.stack, "/v1/mcp/tools?server=calc")
    assert {t["server"] for t in body["tools"]} == {"calc"}
    status, body = await get(env.stack, "/v1/mcp/tools?server=nope")
    assert status == 400 and "unknown MCP server 'nope'" in body["error"]["message"]


async def test_servers_and_health_show_the_connections(env: Env) -> None:
    status, body = await get(env.stack, "/v1/mcp/servers")
    assert status == 200, body
    servers = {s["name"]: s for s in body["servers"]}
    assert servers["demo"]["state"] == "connected" and servers["demo"]["transport"] == "stdio"
    assert servers["calc"]["connected"] is True and servers["calc"]["transport"] == "streamable-http"
    assert servers["calc"]["tools_count"] == 2 and servers["calc"]["error"] is None
    assert servers["old"]["connected"] is True and servers["old"]["transport"] == "sse"
    assert servers["off"]["state"] == "disabled"
    status, health = await get(env.stack, "/health")
    assert status == 200
    tools = sum(servers[name]["tools_count"] for name in ("demo", "calc", "old"))
    assert health == {"status": "ok", "mcp": {"connected": 3, "total": 3, "tools": tools}}


async def test_execute_runs_a_tool_on_each_transport(env: Env) -> None:
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__echo", "arguments": {"text": "hi"}})
    assert (status, body) == (200, {"tool_name": "demo__echo", "content": "hi", "is_error": False,
                                    "error_message": None})
    status, body = await post(env.stack, "/v1/mcp/execute", {"server": "calc", "tool": "add",
                                                              "arguments": {"a": 2, "b": 3}})
    assert (status, body["content"], body["is_error"]) == (200, "5", False)
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "old__shout", "arguments": {"text": "a"}})
    assert (status, body["content"]) == (200, "A")


async def test_tool_failures_are_error_results(env: Env) -> None:
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__fail"})
    assert status == 200 and body["is_error"] is True
    assert "failed on purpose" in body["error_message"] and "failed on purpose" in body["content"]
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__echo", "arguments": {"text": 5}})
    assert status == 200 and body["is_error"] is True  # the server rejected the arguments
    # The server's "timeout": 2 seconds per call.
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__slow", "arguments": {"seconds": 30}})
    assert status == 200 and body["is_error"] is True
    assert body["error_message"] == "the tool did not answer within 2 s"


async def test_a_caller_gone_mid_call_leaves_the_connection_working(env: Env) -> None:
    async def reconnects() -> int:
        _, body = await get(env.stack, "/v1/mcp/servers")
        return next(s for s in body["servers"] if s["name"] == "demo")["reconnects"]

    before = await reconnects()
    timeout = aiohttp.ClientTimeout(total=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):  # the sidecar cancels the gRPC call, which cancels the MCP call
            await session.post(f"{env.stack.http_base}/v1/mcp/execute",
                               json={"tool_name": "demo__slow", "arguments": {"seconds": 1}})
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__echo", "arguments": {"text": "ok"}})
    assert (status, body["content"]) == (200, "ok")
    assert await reconnects() == before


async def test_results_are_capped(env: Env) -> None:
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__big", "arguments": {"size": 5000}})
    assert status == 200 and not body["is_error"]
    assert body["content"] == "x" * 1000 + "\n[truncated: 4000 more bytes]"


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"tool_name": "nope__echo"}, "name", "unknown MCP server 'nope'"),
    ({"tool_name": "demo__nope"}, "name", "MCP server 'demo' has no tool 'nope'"),
    ({"tool_name": "echo"}, "name", "unknown MCP server 'echo'"),
    ({"arguments": {}}, "tool_name", "tool_name (SERVER__TOOL) is required"),
    ({"tool_name": "demo__echo", "arguments": "[1]"}, "arguments_json", "must be a JSON object"),
    ({"tool_name": "demo__echo", "arguments": 3}, "arguments", ""),
])
async def test_bad_execute_requests_are_400(env: Env, body: dict, param: str, message: str) -> None:
    status, reply = await post(env.stack, "/v1/mcp/execute", body)
    assert status == 400, reply
    assert reply["error"]["param"] == param and message in reply["error"]["message"]


async def test_grpc_mcp_service(env: Env) -> None:
    async with grpc.aio.insecure_channel(env.stack.grpc_target) as channel:
        stub = pb_grpc.McpStub(channel)
        reply = await stub.CallMcpTool(pb.CallMcpToolRequest(name="calc__shout", arguments_json='{"text": "hey"}'))
        assert (reply.content, reply.is_error) == ("HEY", False)
        servers = (await stub.ListMcpServers(pb.ListMcpServersRequest())).servers
        assert {s.name: s.state for s in servers}["calc"] == pb.MCP_SERVER_STATE_CONNECTED
        tools = (await stub.ListMcpTools(pb.ListMcpToolsRequest(server_label="demo"))).tools
        record = next(t for t in tools if t.tool == "record")
        assert record.name == "demo__record" and json.loads(record.parameters_json)["required"] == ["zone"]


async def test_a_killed_stdio_server_is_reconnected(env: Env) -> None:
    old_pid = int(env.pid.read_text())
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:  # bounded polling of the status the service reports
        _, body = await get(env.stack, "/v1/mcp/servers")
        demo = next(s for s in body["servers"] if s["name"] == "demo")
        if demo["connected"] and demo["reconnects"] >= 1:
            break
        assert time.monotonic() < deadline, f"not reconnected: {demo}"
        await asyncio.sleep(0.1)
    assert int(env.pid.read_text()) != old_pid
    status, body = await post(env.stack, "/v1/mcp/execute", {"tool_name": "demo__echo", "arguments": {"text": "back"}})
    assert (status, body["content"]) == (200, "back")


# ------------------------------------------------------------------ the server-side tool loop


def sdk(stack: Stack, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="k", max_retries=0, **kwargs)


def test_the_loop_runs_the_tool_and_streams_call_and_result(env: Env) -> None:
    before = len(env.calls())
    stream = sdk(env.stack).chat.completions.create(
        model="llama", messages=ASK, tools=[RECORD_ONLY], tool_choice="required", max_tokens=100, seed=0,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len(env.calls()) == before + 1  # the tool really ran, once
    zone = env.calls()[-1]
    pieces = [p for c in chunks if c.choices for p in (getattr(c.choices[0].delta, "mcp_calls", None) or [])]
    assert len(pieces) == 2
    call, result = pieces
    assert call["name"] == "demo__record" and json.loads(call["arguments"]) == {"zone": zone}
    assert result == {"index": 0, "id": call["id"], "output": f"recorded {zone}", "is_error": False}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["length"], ["stop"])  # the last step answers: no tool_calls for the client
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    usage = chunks[-1].usage
    # Usage sums both steps: more prompt tokens than the first step alone.
    first = sdk(env.stack).chat.completions.create(
        model="llama", messages=ASK, tools=[{"type": "function", "function": {
            "name": "demo__record", "description": "Records a time zone in the log file.",
            "parameters": call_schema(env)}}], tool_choice="required", max_tokens=100, seed=0)
    assert usage.prompt_tokens > 2 * first.usage.prompt_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def call_schema(env: Env) -> dict:
    tools = asyncio.run(get(env.stack, "/v1/mcp/tools?server=demo"))[1]["tools"]
    return next(t["parameters"] for t in tools if t["name"] == "demo__record")


def test_the_loop_without_streaming_lists_the_calls(env: Env) -> None:
    before = len(env.calls())
    reply = sdk(env.stack).chat.completions.create(
        model="llama", messages=ASK, tools=[RECORD_ONLY], tool_choice="required", max_tokens=100, seed=1)
    assert len(env.calls()) == before + 1
    message = reply.choices[0].message
    (entry,) = message.model_extra["mcp_calls"]
    assert entry["name"] == "demo__record" and entry["output"] == f"recorded {env.calls()[-1]}"
    assert entry["is_error"] is False and not message.tool_calls
    assert reply.choices[0].finish_reason in ("length", "stop")


def test_a_failing_tool_is_fed_back_as_an_error_result(env: Env) -> None:
    stream = sdk(env.stack).chat.completions.create(
        model="llama", messages=ASK, tools=[{"type": "mcp", "server_label": "demo", "allowed_tools": ["fail"]}],
        tool_choice="required", max_tokens=100, stream=True)
    pieces = [p for c in stream if c.choices for p in (getattr(c.choices[0].delta, "mcp_calls", None) or [])]
    assert pieces[0]["name"] == "demo__fail"
    assert pieces[1]["is_error"] is True and "failed on purpose" in pieces[1]["output"]


def test_a_client_tool_call_goes_back_to_the_client(env: Env) -> None:
    before = len(env.calls())
    client_tool = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC"]}}, "required": ["zone"]}}}
    reply = sdk(env.stack).chat.completions.create(
        model="llama", messages=ASK, tools=[RECORD_ONLY, client_tool], max_tokens=100,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_time" and reply.choices[0].finish_reason == "tool_calls"
    assert len(env.calls()) == before


async def test_grpc_generate_with_mcp_tools(env: Env) -> None:
    request = pb.GenerateRequest(model="llama", request_id="mcp-grpc-1",
                                 mcp_tools=[pb.McpToolset(server_label="demo", allowed_tools=["record"])])
    request.chat.messages.add(role="user").content.add(text="Which zone?")
    request.tool_choice.function_name = "demo__record"
    request.stopping.max_tokens = 100
    async with grpc.aio.insecure_channel(env.stack.grpc_target) as channel:
        reply = await pb_grpc.InferenceStub(channel).Generate(request)
    assert reply.request_id == "mcp-grpc-1" and reply.model == "llama"
    call, result = reply.tool_events
    assert call.call.name == "demo__record" and result.result.call_id == call.call.id
    assert result.result.content == f"recorded {env.calls()[-1]}" and not result.result.is_error
    assert reply.finish.reason != pb.STOP_REASON_TOOL_CALLS and not reply.finish.tool_calls


@pytest.mark.parametrize(("tool", "param", "message", "status"), [
    ({"type": "mcp", "server_label": "nope"}, "mcp_tools[0].server_label", "unknown MCP server 'nope'", 400),
    ({"type": "mcp", "server_label": "demo", "allowed_tools": ["nope"]}, "mcp_tools[0].allowed_tools",
     "has no tool 'nope'", 400),
    ({"type": "mcp", "server_label": "off"}, "mcp_tools[0].server_label", "is not connected", 503),
    ({"type": "mcp"}, "tools[0].server_label", "", 400),
])
async def test_bad_mcp_tools_are_refused(env: Env, tool: dict, param: str, message: str, status: int) -> None:
    code, body = await post(env.stack, "/v1/chat/completions",
                            {"model": "llama", "messages": ASK, "tools": [tool], "stream": True})
    assert code == status, body
    assert body["error"]["param"] == param and message in body["error"]["message"]


def test_without_mcp_config_mcp_tools_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="start the server with --mcp-config"):
        client.chat.completions.create(model="llama", messages=ASK, tools=[RECORD_ONLY])


async def test_the_responses_api_shows_mcp_call_items(env: Env) -> None:
    status, body = await post(env.stack, "/v1/responses", {
        "model": "llama", "input": "Which zone?", "max_output_tokens": 100, "tool_choice": "required",
        "tools": [{**RECORD_ONLY, "require_approval": "never"}]})
    assert status == 200, body
    item = next(i for i in body["output"] if i["type"] == "mcp_call")
    assert (item["server_label"], item["name"]) == ("demo", "record")
    assert item["output"] == f"recorded {env.calls()[-1]}"


# ------------------------------------------------------------------ API keys and shutdown


async def test_running_tools_needs_the_api_key_and_stop_ends_the_servers(
        model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "mcp.json"
    pid_file = tmp_path / "pid"
    config.write_text(json.dumps({"mcpServers": {"demo": {"command": sys.executable, "args": [str(DEMO_SERVER)],
                                                           "env": {"MLXRPC_TEST_MCP_LOG": str(tmp_path / "log"),
                                                                   "MLXRPC_TEST_MCP_PID": str(pid_file)}}}}))
    stack = await asyncio.to_thread(start_stack, [f"llama={model_dir}"], mcp_config=str(config), api_key=["key"])
    try:
        body = {"tool_name": "demo__echo", "arguments": {"text": "x"}}
        assert (await post(stack, "/v1/mcp/execute", body))[0] == 401
        assert (await post(stack, "/v1/mcp/execute", body, Authorization="Bearer key"))[1]["content"] == "x"
        code, reply = await post(stack, "/v1/chat/completions", {"model": "llama", "messages": ASK,
                                                                 "tools": [RECORD_ONLY]})
        assert code == 401, reply
        async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.McpStub(channel).CallMcpTool(pb.CallMcpToolRequest(name="demo__echo"))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # /health leaves MCP out for a probe without the key, and shows it with one.
        assert (await get(stack, "/health"))[1] == {"status": "ok"}
        assert (await get(stack, "/health", Authorization="Bearer key"))[1]["mcp"]["connected"] == 1
        pid = int(pid_file.read_text())
    finally:
        await asyncio.to_thread(stop_stack, stack)
    with pytest.raises(ProcessLookupError):  # stopping the server closed the stdio server
        os.kill(pid, 0)
