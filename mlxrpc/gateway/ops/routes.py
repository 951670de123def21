"""Health, readiness and metrics of the engine behind the sidecar, at the root (no /v1 twin)."""

from __future__ import annotations

from aiohttp import web

from ...v1 import inference_pb2 as pb
from ..http.answers import json_answer
from ..http.context import UPSTREAM, metadata
from ..http.operations import COMMON_ERRORS, Operation
from ..mcp.routes import health_status
from .protocol import HealthStatus


async def metrics(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAM].inference.GetMetrics(
        pb.GetMetricsRequest(), metadata=metadata(request))
    return web.Response(text=reply.text, content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


async def health(request: web.Request) -> web.Response:
    """Serving when the engine is (``?model=ID`` asks about one model); MCP servers' state when configured."""
    if await request.app[UPSTREAM].serving(request.query.get("model", "")):
        mcp = await health_status(request)
        return json_answer(HealthStatus(status="ok", **({"mcp": mcp} if mcp is not None else {})))
    return json_answer(HealthStatus(status="unavailable"), status=503)


OPERATIONS = [
    Operation("get", "/health", "Engine health", health, response=HealthStatus, also=(503,), errors=(),
              twin=False),
    Operation("get", "/ready", "Readiness, of the engine or of one model (?model=ID)", health,
              response=HealthStatus, also=(503,), errors=(), query=("model",), twin=False),
    Operation("get", "/metrics", "Prometheus metrics", metrics, media_type="text/plain", errors=COMMON_ERRORS,
              twin=False),
]
