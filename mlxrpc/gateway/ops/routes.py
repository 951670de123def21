"""Health, readiness and metrics of the engine behind the sidecar, at the root (no /v1 twin)."""

from __future__ import annotations

from typing import Any

import grpc
from aiohttp import web

from ...v1 import inference_pb2 as pb
from ..http.answers import json_answer
from ..http.context import UPSTREAM, metadata
from ..http.errors import ApiError
from ..http.operations import COMMON_ERRORS, Operation
from ..mcp.routes import health_status
from ..openai.translate import parallelism
from .protocol import HealthStatus


async def metrics(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAM].inference.GetMetrics(
        pb.GetMetricsRequest(), metadata=metadata(request))
    return web.Response(text=reply.text, content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


async def health(request: web.Request) -> web.Response:
    """Serving when the engine is (``?model=ID`` asks about one model); MCP servers' state when configured."""
    model = request.query.get("model", "")
    serving = await request.app[UPSTREAM].serving(model)
    if serving is None:  # a model the engine has never heard of: not one that is loading
        raise ApiError(404, f"the model '{model}' does not exist", param="model", code="model_not_found")
    if not serving:
        return json_answer(HealthStatus(status="unavailable"), status=503)
    mcp = await health_status(request)
    split = await parallelism_status(request)
    return json_answer(HealthStatus(status="ok", **({"mcp": mcp} if mcp is not None else {}),
                                    **({"parallelism": split} if split is not None else {})))


async def parallelism_status(request: web.Request) -> dict[str, Any] | None:
    """The ``parallelism`` part of /health: how the served model is split over a distributed world."""
    try:
        reply = await request.app[UPSTREAM].inference.ListModels(pb.ListModelsRequest(), metadata=metadata(request),
                                                                 timeout=2.0)
    except grpc.aio.AioRpcError:  # e.g. API keys are set and the probe sends none
        return None
    return next((parallelism(m) for m in reply.models if m.HasField("parallelism")), None)


OPERATIONS = [
    Operation("get", "/health", "Engine health", health, response=HealthStatus, also=(503,), errors=(),
              twin=False),
    Operation("get", "/ready", "Readiness, of the engine or of one model (?model=ID)", health,
              response=HealthStatus, also=(503,), errors=(404,), query=("model",), twin=False),
    Operation("get", "/metrics", "Prometheus metrics", metrics, media_type="text/plain", errors=COMMON_ERRORS,
              twin=False),
]
