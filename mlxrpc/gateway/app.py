"""Routes of the OpenAI REST sidecar; every generation goes through the gRPC stubs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..service.limits import MAX_JSON_DEPTH, json_depth
from ..v1 import inference_pb2 as pb
from . import translate
from .context import REQUEST_ID, REQUEST_ID_HEADER, STREAMS, UPSTREAM, metadata
from .cors import cors_middleware
from .errors import ApiError, from_http_error, from_rpc_error, from_validation_error, server_error
from .relay import relay
from .schema import ChatCompletionRequest, CompletionRequest, LoadModelBody, lone_surrogate
from .upstream import Upstream, UpstreamTLS

# The body's own nesting (messages[].tool_calls[].function.arguments) around
# the free JSON values the engine bounds at MAX_JSON_DEPTH.
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8

log = logging.getLogger(__name__)

# Seconds a stream cut at the end of the grace period gets to send its error event.
CUT_SECONDS = 2.0


@web.middleware
async def request_ids(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every request gets an id (the client's X-Request-ID, or a new one) that
    travels to the engine as gRPC metadata and comes back in the response."""
    request[REQUEST_ID] = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    return response


@web.middleware
async def openai_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every failure leaves as OpenAI's error body with the mapped HTTP status;
    a bug too (a short 500 for the client, the traceback in the log)."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except grpc.aio.AioRpcError as error:
        return from_rpc_error(error).response()
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return from_http_error(error, request).response()
    except ConnectionError:
        raise  # the client went away; nobody to answer
    except UnicodeEncodeError:  # protobuf strings refuse lone surrogates
        return ApiError(400, "the request holds text that is not valid Unicode (a lone surrogate)",
                        code="invalid_value").response()
    except Exception:
        log.exception("request %s failed", request.get(REQUEST_ID))
        return server_error().response()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


async def _parse(request: web.Request, schema: type[BaseModel]) -> Any:
    raw = await request.read()
    # Deeper JSON would overflow the recursion limit (here, in pydantic or json.dumps): a 400, not a 500.
    if json_depth(raw) > MAX_BODY_DEPTH:
        raise ApiError(400, f"the request body is nested more than {MAX_BODY_DEPTH} levels deep",
                       code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    if (where := lone_surrogate(data)) is not None:
        raise ApiError(400, f"{where or 'the body'}: text holds a lone surrogate, which is not valid "
                       "Unicode", param=where or None, code="invalid_value")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body: ChatCompletionRequest = await _parse(request, ChatCompletionRequest)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    proto = translate.chat_to_proto(body, completion_id)
    created = int(time.time())
    if not body.stream:
        reply = await request.app[UPSTREAM].inference.Generate(proto, metadata=metadata(request))
        return web.json_response(translate.chat_response(reply, completion_id, created, body))
    return await relay(request, proto, translate.ChatStream(completion_id, created, body), metadata(request))


async def completions(request: web.Request) -> web.StreamResponse:
    body: CompletionRequest = await _parse(request, CompletionRequest)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    proto = translate.completion_to_proto(body, completion_id)
    created = int(time.time())
    if not body.stream:
        reply = await request.app[UPSTREAM].inference.Generate(proto, metadata=metadata(request))
        return web.json_response(translate.completion_response(reply, completion_id, created, body))
    return await relay(request, proto, translate.CompletionStream(completion_id, created, body),
                       metadata(request))


async def list_models(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAM].inference.ListModels(
        pb.ListModelsRequest(), metadata=metadata(request))
    return web.json_response(
        {"object": "list", "data": [translate.model_object(m) for m in reply.models]}
    )


async def get_model(request: web.Request) -> web.Response:
    model = await request.app[UPSTREAM].inference.ModelInfo(
        pb.ModelInfoRequest(model=request.match_info["model"]), metadata=metadata(request))
    return web.json_response(translate.model_object(model))


async def load_model(request: web.Request) -> web.Response:
    """FastMLX's "add model": {"model": HUB_ID_OR_PATH, "id": optional short id}."""
    body: LoadModelBody = await _parse(request, LoadModelBody)
    model = await request.app[UPSTREAM].inference.LoadModel(
        pb.LoadModelRequest(source=body.model, id=body.id or ""), metadata=metadata(request))
    return web.json_response(translate.model_object(model), status=201)


async def unload_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model"]
    await request.app[UPSTREAM].inference.UnloadModel(
        pb.UnloadModelRequest(model=model_id), metadata=metadata(request))
    return web.json_response({"id": model_id, "object": "model", "deleted": True})


async def metrics(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAM].inference.GetMetrics(
        pb.GetMetricsRequest(), metadata=metadata(request))
    return web.Response(text=reply.text, content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")


async def health(request: web.Request) -> web.Response:
    """Serving when the engine is (``?model=ID`` asks about one model); MCP servers' state when configured."""
    if await request.app[UPSTREAM].serving(request.query.get("model", "")):
        from .mcp import health_status  # imported here: mcp.py imports this module
        return web.json_response({"status": "ok", **await parallelism_status(request),
                                  **await health_status(request)})
    return web.json_response({"status": "unavailable"}, status=503)


async def parallelism_status(request: web.Request) -> dict[str, Any]:
    """The ``parallelism`` part of /health: how the served model is split over a distributed world."""
    try:
        reply = await request.app[UPSTREAM].inference.ListModels(pb.ListModelsRequest(), metadata=metadata(request),
                                                                 timeout=2.0)
    except grpc.aio.AioRpcError:  # e.g. API keys are set and the probe sends none
        return {}
    split = next((translate.parallelism(m) for m in reply.models if m.HasField("parallelism")), None)
    return {"parallelism": split} if split else {}


def create_app(upstreams: list[str], max_body_bytes: int, tls: UpstreamTLS | None = None,
               cors_origins: list[str] | None = None) -> web.Application:
    middlewares = [request_ids, openai_errors]
    if cors_origins:
        middlewares.insert(0, cors_middleware(cors_origins))
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[STREAMS] = set()

    async def connect(app: web.Application) -> AsyncIterator[None]:
        app[UPSTREAM] = Upstream(upstreams, max_body_bytes, tls)
        yield
        await app[UPSTREAM].close()

    app.cleanup_ctx.append(connect)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(prefix + "/models/{model:.+}", get_model)
        app.router.add_post(f"{prefix}/models", load_model)
        app.router.add_delete(prefix + "/models/{model:.+}", unload_model)
    from .tokens import add_routes as add_token_routes  # imported here: tokens.py imports this module
    add_token_routes(app)
    from .responses import add_routes as add_responses_routes  # likewise
    add_responses_routes(app)
    from .anthropic import add_routes as add_anthropic_routes  # likewise
    add_anthropic_routes(app)
    from .embeddings import add_routes as add_embedding_routes  # likewise
    add_embedding_routes(app)
    from .mcp import add_routes as add_mcp_routes  # likewise
    add_mcp_routes(app)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", health)
    app.router.add_get("/metrics", metrics)
    return app


async def start_app(app: web.Application, host: str, port: int, *, reuse_port: bool = False,
                    grace: float = 30.0) -> tuple[web.AppRunner, int]:
    """Serves ``app``; returns the runner and the bound port (port 0 picks one).

    ``runner.cleanup()`` then drains: in-flight responses get ``grace`` seconds;
    streams still running then end with an in-band error event and [DONE].
    """

    async def cut_streams_after_grace(app: web.Application) -> None:  # the drain has begun
        def cut() -> None:
            for call in list(app[STREAMS]):
                call.cancel()

        asyncio.get_running_loop().call_later(grace, cut)

    app.on_shutdown.append(cut_streams_after_grace)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None,
                           shutdown_timeout=grace + CUT_SECONDS)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound

