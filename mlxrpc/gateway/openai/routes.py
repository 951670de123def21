"""Routes of OpenAI's chat completions, completions and models APIs, on Generate / StreamGenerate and the model RPCs."""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from ...v1 import inference_pb2 as pb
from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import UPSTREAM, metadata
from ..http.operations import BODY_ERRORS, COMMON_ERRORS, Operation
from ..http.relay import collect, relay
from . import translate
from .events import ChatStream, CompletionStream, fold_chat
from .protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DeletedModel,
    LoadModelBody,
    ModelList,
    ModelObject,
)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ChatCompletionRequest)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    proto = translate.chat_to_proto(body, completion_id)
    created = int(time.time())
    if not body.stream:
        stream = ChatStream(completion_id, created, body, include_usage=True)
        return web.json_response(fold_chat(await collect(request, proto, stream, metadata(request)), stream, body))
    return await relay(request, proto, ChatStream(completion_id, created, body), metadata(request))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, CompletionRequest)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    proto = translate.completion_to_proto(body, completion_id)
    created = int(time.time())
    if not body.stream:
        reply = await request.app[UPSTREAM].inference.Generate(proto, metadata=metadata(request))
        return json_answer(CompletionStream(completion_id, created, body, include_usage=True).answer(reply))
    return await relay(request, proto, CompletionStream(completion_id, created, body), metadata(request))


async def list_models(request: web.Request) -> web.Response:
    reply = await request.app[UPSTREAM].inference.ListModels(
        pb.ListModelsRequest(), metadata=metadata(request))
    return json_answer(ModelList(object="list", data=[translate.model_object(m) for m in reply.models]))


async def get_model(request: web.Request) -> web.Response:
    model = await request.app[UPSTREAM].inference.ModelInfo(
        pb.ModelInfoRequest(model=request.match_info["model"]), metadata=metadata(request))
    return json_answer(translate.model_object(model))


async def load_model(request: web.Request) -> web.Response:
    """FastMLX's "add model": {"model": HUB_ID_OR_PATH, "id": optional short id}."""
    body = await parse_body(request, LoadModelBody)
    model = await request.app[UPSTREAM].inference.LoadModel(
        pb.LoadModelRequest(source=body.model, id=body.id or ""), metadata=metadata(request))
    return json_answer(translate.model_object(model), status=201)


async def unload_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model"]
    await request.app[UPSTREAM].inference.UnloadModel(
        pb.UnloadModelRequest(model=model_id), metadata=metadata(request))
    return json_answer(DeletedModel(id=model_id, object="model", deleted=True))


OPERATIONS = [
    Operation("post", "/v1/chat/completions", "Chat completion", chat_completions, ChatCompletionRequest,
              ChatCompletion, stream=ChatCompletionChunk, errors=BODY_ERRORS),
    Operation("post", "/v1/completions", "Text completion", completions, CompletionRequest,
              Completion, stream=Completion, errors=BODY_ERRORS),
    Operation("get", "/v1/models", "List models", list_models, response=ModelList),
    Operation("get", "/v1/models/{model:.+}", "One model", get_model, response=ModelObject,
              errors=(400, 404, *COMMON_ERRORS)),
    Operation("post", "/v1/models", "Load a model (admin key)", load_model, LoadModelBody, ModelObject,
              status=201, errors=(400, 403, 404, 409, 413, *COMMON_ERRORS)),
    Operation("delete", "/v1/models/{model:.+}", "Unload a model (admin key)", unload_model,
              response=DeletedModel, errors=(400, 403, 404, *COMMON_ERRORS)),
]
