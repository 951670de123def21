"""What the operations routes answer: /health and /ready."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from ..mcp.protocol import McpHealth
from ..openai.protocol import Parallelism


class HealthStatus(BaseModel):
    status: Literal["ok", "unavailable"]
    mcp: McpHealth | None = Field(default=None, description="with --mcp-config")
    parallelism: Parallelism | None = Field(default=None, description="with --parallel")
