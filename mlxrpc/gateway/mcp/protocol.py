"""What the MCP routes take and answer."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..http.answers import Count
from ..http.body import Strict


class McpExecuteBody(Strict):
    """``{"tool_name": "SERVER__TOOL", "arguments": {...}}`` (or ``"server"`` and ``"tool"``)."""

    tool_name: str | None = None
    server: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] | str | None = None


class McpToolInfo(BaseModel):
    name: str
    description: str
    server: str
    parameters: dict[str, Any]


class McpToolList(BaseModel):
    tools: list[McpToolInfo]
    count: Count


class McpServerInfo(BaseModel):
    name: str
    transport: str
    state: Literal["connecting", "connected", "disabled"]
    connected: bool
    tools_count: Count
    error: str | None
    reconnects: Count


class McpServerList(BaseModel):
    servers: list[McpServerInfo]
    count: Count


class McpExecuteResult(BaseModel):
    tool_name: str
    content: str
    is_error: bool
    error_message: str | None


class McpHealth(BaseModel):
    connected: int = Field(ge=0, description="enabled MCP servers that are connected")
    total: int = Field(ge=0, description="enabled MCP servers")
    tools: int = Field(ge=0, description="tools of the connected servers")
