"""Routes of Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens.

A transcoder onto Generate / StreamGenerate / Tokenize like the OpenAI routes,
with Anthropic's shapes: ``x-api-key`` (or ``Authorization``) as the gRPC
credentials, Anthropic's error body, and its named SSE events (no ``[DONE]``).
``anthropic-version`` and ``anthropic-beta`` headers are accepted and ignored.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from ..http.answers import json_answer
from ..http.body import parse_body
from ..http.context import REQUEST_ID, UPSTREAM, metadata
from ..http.errors import ApiError, Dialect
from ..http.operations import BODY_ERRORS, Operation
from ..http.relay import collect, relay
from . import translate
from .events import MessageStream, fold
from .protocol import (
    ANTHROPIC_EVENTS,
    AnthropicErrorBody,
    AnthropicMessage,
    CountTokensRequest,
    MessagesRequest,
    TokenCount,
)


def _metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The anthropic SDKs send the key as ``x-api-key``; the engine reads a bearer token."""
    pairs = metadata(request)
    key = request.headers.get("x-api-key")
    if key and "Authorization" not in request.headers:
        pairs += (("authorization", f"Bearer {key}"),)
    return pairs


def _error_body(error: ApiError, request: web.Request) -> AnthropicErrorBody:
    return AnthropicErrorBody.model_validate({**translate.error_body(error), "request_id": request[REQUEST_ID]})


# Failures before the first byte leave as Anthropic's error body with the mapped status.
ERRORS = Dialect(AnthropicErrorBody, _error_body)


async def create_message(request: web.Request) -> web.StreamResponse:
    body = await parse_body(request, MessagesRequest)
    message_id = f"msg_{uuid.uuid4().hex}"
    proto = translate.to_proto(body, message_id)
    if not body.stream:
        return web.json_response(fold(await collect(request, proto, MessageStream(message_id), _metadata(request))))
    return await relay(request, proto, MessageStream(message_id), _metadata(request))


async def count_tokens(request: web.Request) -> web.Response:
    body = await parse_body(request, CountTokensRequest)
    reply = await request.app[UPSTREAM].inference.Tokenize(
        translate.count_tokens_request(body), metadata=_metadata(request))
    return json_answer(TokenCount(input_tokens=len(reply.token_ids)))


OPERATIONS = [
    Operation("post", "/v1/messages", "Anthropic Messages", create_message, MessagesRequest, AnthropicMessage,
              events=ANTHROPIC_EVENTS, errors=BODY_ERRORS, dialect=ERRORS),
    Operation("post", "/v1/messages/count_tokens", "Anthropic token count", count_tokens, CountTokensRequest,
              TokenCount, errors=BODY_ERRORS, dialect=ERRORS),
]
