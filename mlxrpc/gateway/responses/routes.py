"""Routes of the OpenAI Responses API: POST/GET/DELETE /v1/responses.

Generation goes through Generate/StreamGenerate; stored conversations live in
the engine's ResponseStore service, so any sidecar worker can continue any
response. Streams carry ``event:`` + ``data:`` lines with sequence numbers and
end after the final lifecycle event (no ``[DONE]``, as OpenAI does).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import grpc
from aiohttp import web

from ...v1 import inference_pb2 as pb
from ...v1 import inference_pb2_grpc as pb_grpc
from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import UPSTREAM, metadata
from ..http.errors import from_rpc_error
from ..http.operations import BODY_ERRORS, COMMON_ERRORS, Operation
from ..http.relay import collect, relay
from . import translate
from .events import ResponseBuilder, fold
from .protocol import RESPONSE_EVENTS, DeletedResponse, ResponseObject, ResponsesRequest

log = logging.getLogger(__name__)
SKIPPED_TOOLS_HEADER = "X-Skipped-Tools"


def _store(request: web.Request) -> pb_grpc.ResponseStoreStub:
    return pb_grpc.ResponseStoreStub(request.app[UPSTREAM].channel)


async def create_response(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, ResponsesRequest)
    response_id = f"resp_{uuid.uuid4().hex}"
    history: list[pb.ChatMessage] = []
    if body.previous_response_id:
        reply = await _store(request).GetResponse(
            pb.GetResponseRequest(id=body.previous_response_id, include_conversation=True),
            metadata=metadata(request))
        history = list(reply.conversation)
    own = translate.input_messages(body)
    proto = translate.to_proto(body, response_id, history, own)
    builder = ResponseBuilder(response_id, int(time.time()), body,
                              want_logprobs=proto.options.logprobs)
    headers = {}
    if skipped := translate.skipped_tools(body):
        # Hosted tools only OpenAI runs: the model is not offered them.
        log.info("response %s: tools left out (hosted): %s", response_id, ", ".join(skipped))
        headers[SKIPPED_TOOLS_HEADER] = ", ".join(skipped)
    if not body.stream:
        result = fold(await collect(request, proto, builder, metadata(request)))
        if body.store:
            result["store"] = await _put(request, body, own, result)
        return web.json_response(result, headers=headers)
    return await _stream(request, body, own, proto, builder, headers)


async def _put(request: web.Request, body: ResponsesRequest, own: list[pb.ChatMessage],
               result: dict[str, Any]) -> bool:
    """Keeps a finished response for continuations; whether it was stored.

    A store that is off, or a response too big for it, does not fail the
    response the client already has: it is only not kept.
    """
    stored = pb.StoredResponse(
        id=result["id"], previous_response_id=body.previous_response_id or "",
        messages=own + translate.output_messages(result["output"]),
        response_json=json.dumps(result, separators=(",", ":"), ensure_ascii=False))
    try:
        await _store(request).PutResponse(pb.PutResponseRequest(response=stored),
                                          metadata=metadata(request))
    except grpc.aio.AioRpcError as error:
        if from_rpc_error(error).code != "response_store_disabled":
            log.warning("response %s not stored: %s", result["id"], error.details())
        return False
    return True


async def _stream(request: web.Request, body: ResponsesRequest, own: list[pb.ChatMessage],
                  proto: pb.GenerateRequest, builder: ResponseBuilder,
                  headers: dict[str, str]) -> web.StreamResponse:
    """Relays StreamGenerate as Responses events; a finished response is stored
    before its final event goes out, which says whether it was."""

    async def store(final: list[dict[str, Any]]) -> None:
        final[-1]["response"]["store"] = await _put(request, body, own, builder.response())

    return await relay(request, proto, builder, metadata(request), store if body.store else None, headers)


async def get_response(request: web.Request) -> web.Response:
    reply = await _store(request).GetResponse(
        pb.GetResponseRequest(id=request.match_info["response_id"]), metadata=metadata(request))
    return web.json_response(text=reply.response.response_json)


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["response_id"]
    await _store(request).DeleteResponse(pb.DeleteResponseRequest(id=response_id),
                                         metadata=metadata(request))
    return json_answer(DeletedResponse(id=response_id, object="response", deleted=True))


OPERATIONS = [
    Operation("post", "/v1/responses", "OpenAI Responses", create_response, ResponsesRequest, ResponseObject,
              events=RESPONSE_EVENTS, errors=BODY_ERRORS),
    Operation("get", "/v1/responses/{response_id}", "A stored response", get_response, response=ResponseObject,
              errors=(400, 404, *COMMON_ERRORS)),
    Operation("delete", "/v1/responses/{response_id}", "Delete a stored response", delete_response,
              response=DeletedResponse, errors=(400, 404, *COMMON_ERRORS)),
]
