"""The mlxrpc.v1.Mcp servicer: the configured MCP servers' tools, listed and run."""

from __future__ import annotations

import json
import logging
import time

import grpc

from ..engine.errors import invalid
from ..v1 import inference_pb2 as pb
from ..v1 import inference_pb2_grpc as pb_grpc
from .convert import json_object
from .mcp import CONNECTED, DISABLED, Connection, McpManager, McpTool

log = logging.getLogger(__name__)

_STATES = {CONNECTED: pb.MCP_SERVER_STATE_CONNECTED, DISABLED: pb.MCP_SERVER_STATE_DISABLED}


def to_tool(tool: McpTool) -> pb.McpTool:
    return pb.McpTool(name=tool.full_name, server=tool.server, tool=tool.name,
                      description=tool.description, parameters_json=json.dumps(tool.parameters))


def to_server(connection: Connection) -> pb.McpServer:
    return pb.McpServer(
        name=connection.config.name, transport=connection.config.transport,
        state=_STATES.get(connection.state, pb.MCP_SERVER_STATE_CONNECTING),
        tool_count=len(connection.tools), last_error=connection.last_error,
        reconnects=connection.reconnects,
    )


class McpServicer(pb_grpc.McpServicer):
    def __init__(self, manager: McpManager) -> None:
        self._manager = manager

    async def ListMcpTools(
        self, request: pb.ListMcpToolsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMcpToolsResponse:
        return pb.ListMcpToolsResponse(tools=[to_tool(t) for t in self._manager.tools(request.server_label)])

    async def ListMcpServers(
        self, request: pb.ListMcpServersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMcpServersResponse:
        return pb.ListMcpServersResponse(servers=[to_server(c) for c in self._manager.connections.values()])

    async def CallMcpTool(
        self, request: pb.CallMcpToolRequest, context: grpc.aio.ServicerContext
    ) -> pb.CallMcpToolResponse:
        if not request.name:
            raise invalid("name", "name (SERVER__TOOL) is required")
        arguments = json_object(request.arguments_json, "arguments_json")
        started = time.perf_counter()
        outcome = await self._manager.call(request.name, arguments)
        log.info("mcp call name=%s is_error=%s seconds=%.3f", request.name, outcome.is_error,
                 time.perf_counter() - started)
        return pb.CallMcpToolResponse(name=request.name, content=outcome.content, is_error=outcome.is_error,
                                      error_message=outcome.error_message)
