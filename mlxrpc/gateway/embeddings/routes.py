"""OpenAI's ``POST /v1/embeddings`` on the Embed RPC."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import UPSTREAM, metadata
from ..http.errors import OPENAI
from ..http.operations import BODY_ERRORS, Operation
from .protocol import EmbeddingList, EmbeddingRequest
from .translate import to_proto, to_response

# The engine names the proto's ``inputs[i]``; REST clients sent ``input[i]``.
ERRORS = replace(OPENAI, renames=(("inputs", "input"),))


async def embeddings(request: web.Request) -> web.Response:
    body = await parse_body(request, EmbeddingRequest)
    reply = await request.app[UPSTREAM].inference.Embed(to_proto(body), metadata=metadata(request))
    return json_answer(to_response(reply, body.encoding_format))


OPERATIONS = [
    Operation("post", "/v1/embeddings", "Embeddings", embeddings, EmbeddingRequest, EmbeddingList,
              errors=BODY_ERRORS, dialect=ERRORS),
]
