"""REST routes for the configured MCP servers, as vllm-mlx serves them:
GET /v1/mcp/tools, GET /v1/mcp/servers, POST /v1/mcp/execute. Each is one call
of the engine's Mcp service; the API key travels with it, so running a tool
needs the key whenever the server has keys.
"""

from __future__ import annotations

import json

import grpc
from aiohttp import web

from ...v1 import inference_pb2 as pb
from ...v1 import inference_pb2_grpc as pb_grpc
from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import UPSTREAM, metadata
from ..http.errors import ApiError
from ..http.operations import BODY_ERRORS, COMMON_ERRORS, Operation
from . import translate
from .protocol import McpExecuteBody, McpExecuteResult, McpHealth, McpServerList, McpToolList


def _stub(request: web.Request) -> pb_grpc.McpStub:
    return pb_grpc.McpStub(request.app[UPSTREAM].channel)


async def list_tools(request: web.Request) -> web.Response:
    """``?server=NAME`` lists one server's tools."""
    reply = await _stub(request).ListMcpTools(
        pb.ListMcpToolsRequest(server_label=request.query.get("server", "")), metadata=metadata(request))
    return json_answer(translate.tools_response(reply))


async def list_servers(request: web.Request) -> web.Response:
    reply = await _stub(request).ListMcpServers(pb.ListMcpServersRequest(), metadata=metadata(request))
    return json_answer(translate.servers_response(reply))


async def execute(request: web.Request) -> web.Response:
    body = await parse_body(request, McpExecuteBody)
    name = body.tool_name or (f"{body.server}__{body.tool}" if body.server and body.tool else "")
    if not name:
        raise ApiError(400, "tool_name (SERVER__TOOL) is required", param="tool_name", code="invalid_value")
    arguments = body.arguments if isinstance(body.arguments, str) else json.dumps(body.arguments or {})
    reply = await _stub(request).CallMcpTool(pb.CallMcpToolRequest(name=name, arguments_json=arguments),
                                             metadata=metadata(request))
    return json_answer(translate.execute_response(reply))


async def health_status(request: web.Request) -> McpHealth | None:
    """The ``mcp`` part of /health; None without MCP servers, or when the engine will not say."""
    try:
        reply = await _stub(request).ListMcpServers(pb.ListMcpServersRequest(), metadata=metadata(request),
                                                    timeout=2.0)
    except grpc.aio.AioRpcError:  # e.g. API keys are set and the probe sends none
        return None
    return translate.health(reply)


OPERATIONS = [
    Operation("get", "/v1/mcp/tools", "Tools of the configured MCP servers (?server=NAME for one)", list_tools,
              response=McpToolList, errors=(400, 404, *COMMON_ERRORS), query=("server",)),
    Operation("get", "/v1/mcp/servers", "The configured MCP servers", list_servers, response=McpServerList,
              errors=(400, *COMMON_ERRORS)),
    Operation("post", "/v1/mcp/execute", "Run an MCP tool", execute, McpExecuteBody, McpExecuteResult,
              errors=(403, *BODY_ERRORS)),
]
