"""vLLM's ``POST /tokenize`` and ``POST /detokenize`` on the Tokenize, Detokenize and ModelInfo RPCs."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ...v1 import inference_pb2 as pb
from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import UPSTREAM, metadata
from ..http.operations import BODY_ERRORS, Operation
from .protocol import DetokenizeBody, DetokenizeResult, TokenizeBody, TokenizeResult
from .translate import detokenize_to_proto, tokenize_response, tokenize_to_proto


async def tokenize(request: web.Request) -> web.Response:
    body = await parse_body(request, TokenizeBody)
    proto = tokenize_to_proto(body)
    stub = request.app[UPSTREAM].inference
    reply, model = await asyncio.gather(
        stub.Tokenize(proto, metadata=metadata(request)),
        stub.ModelInfo(pb.ModelInfoRequest(model=proto.model), metadata=metadata(request)),
    )
    return json_answer(tokenize_response(reply, model, bool(body.return_token_strs)))


async def detokenize(request: web.Request) -> web.Response:
    body = await parse_body(request, DetokenizeBody)
    reply = await request.app[UPSTREAM].inference.Detokenize(
        detokenize_to_proto(body), metadata=metadata(request))
    return json_answer(DetokenizeResult(prompt=reply.text))


# vLLM serves these at the root; the /v1 twins serve clients that join paths to a /v1 base URL.
OPERATIONS = [
    Operation("post", "/tokenize", "Tokenize (vLLM's shape; also /v1/tokenize)", tokenize, TokenizeBody,
              TokenizeResult, errors=BODY_ERRORS),
    Operation("post", "/detokenize", "Detokenize (vLLM's shape; also /v1/detokenize)", detokenize,
              DetokenizeBody, DetokenizeResult, errors=BODY_ERRORS),
]
