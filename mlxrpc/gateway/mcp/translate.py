"""Pure translation for the MCP routes (vllm-mlx's shapes) and for server-side
MCP tool calls in chat completions.

OpenAI's chat API has no slot for tools the server ran itself, so mlxrpc adds
``mcp_calls`` to the assistant message: one entry per call, with its output.
Streams send the same entries as ``delta.mcp_calls`` pieces indexed like
``tool_calls`` deltas: the call when it starts, its output when it ends.
"""

from __future__ import annotations

import json
from typing import Any

from ...v1 import inference_pb2 as pb
from .protocol import McpExecuteResult, McpHealth, McpServerInfo, McpServerList, McpToolInfo, McpToolList

_STATES = {
    pb.MCP_SERVER_STATE_CONNECTING: "connecting",
    pb.MCP_SERVER_STATE_CONNECTED: "connected",
    pb.MCP_SERVER_STATE_DISABLED: "disabled",
}


def tool_object(tool: pb.McpTool) -> McpToolInfo:
    return McpToolInfo(name=tool.name, description=tool.description, server=tool.server,
                       parameters=json.loads(tool.parameters_json or "{}"))


def tools_response(reply: pb.ListMcpToolsResponse) -> McpToolList:
    return McpToolList(tools=[tool_object(t) for t in reply.tools], count=len(reply.tools))


def server_object(server: pb.McpServer) -> McpServerInfo:
    return McpServerInfo(name=server.name, transport=server.transport,
                         state=_STATES.get(server.state, "connecting"),
                         connected=server.state == pb.MCP_SERVER_STATE_CONNECTED, tools_count=server.tool_count,
                         error=server.last_error or None, reconnects=server.reconnects)


def servers_response(reply: pb.ListMcpServersResponse) -> McpServerList:
    return McpServerList(servers=[server_object(s) for s in reply.servers], count=len(reply.servers))


def health(reply: pb.ListMcpServersResponse) -> McpHealth | None:
    """The ``mcp`` part of /health (disabled servers left out); None without configured servers."""
    if not reply.servers:
        return None
    enabled = [s for s in reply.servers if s.state != pb.MCP_SERVER_STATE_DISABLED]
    connected = [s for s in enabled if s.state == pb.MCP_SERVER_STATE_CONNECTED]
    return McpHealth(connected=len(connected), total=len(enabled), tools=sum(s.tool_count for s in connected))


def execute_response(reply: pb.CallMcpToolResponse) -> McpExecuteResult:
    return McpExecuteResult(tool_name=reply.name, content=reply.content, is_error=reply.is_error,
                            error_message=reply.error_message or None)


def mcp_calls(events: list[pb.ToolEvent]) -> list[dict[str, Any]]:
    """The calls the server ran, each with its output, in order."""
    calls: list[dict[str, Any]] = []
    by_id: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.HasField("call"):
            call = event.call
            entry = {"id": call.id, "type": "mcp_call", "name": call.name, "arguments": call.arguments_json,
                     "output": None, "is_error": False}
            calls.append(entry)
            by_id[call.id] = entry
        elif event.HasField("result") and (entry := by_id.get(event.result.call_id)) is not None:
            entry.update(output=event.result.content, is_error=event.result.is_error)
    return calls


class McpCallDeltas:
    """``delta.mcp_calls`` pieces of one stream, indexed in call order."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}

    def delta(self, event: pb.ToolEvent) -> dict[str, Any]:
        if event.HasField("call"):
            call = event.call
            self._index[call.id] = index = len(self._index)
            return {"mcp_calls": [{"index": index, "id": call.id, "type": "mcp_call", "name": call.name,
                                   "arguments": call.arguments_json}]}
        result = event.result
        index = self._index.get(result.call_id, len(self._index))
        return {"mcp_calls": [{"index": index, "id": result.call_id, "output": result.content,
                               "is_error": result.is_error}]}
