"""What the operations routes answer: /health and /ready."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..openai.protocol import Parallelism


class McpHealth(BaseModel):
    connected: int = Field(ge=0, description="enabled MCP servers that are connected")
    total: int = Field(ge=0, description="enabled MCP servers")
    tools: int = Field(ge=0, description="tools of the connected servers")


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable"]
    mcp: McpHealth | None = Field(default=None, description="with --mcp-config")
    parallelism: Parallelism | None = Field(default=None, description="with --parallel")
