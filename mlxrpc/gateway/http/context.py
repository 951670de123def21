"""What every route reads off the app and the request: the upstream stubs, the
in-flight streams, the request id (and the middleware that gives each request
one), and the gRPC metadata built from them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from .upstream import Upstream

UPSTREAM = web.AppKey("upstream", Upstream)
# In-flight StreamGenerate calls: cut with an in-band error when a drain outlasts its grace period.
STREAMS = web.AppKey("streams", set)
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID = web.RequestKey("request_id", str)


def metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for an upstream call: the caller's credentials and request id."""
    pairs = [("x-request-id", request[REQUEST_ID])]
    if auth := request.headers.get("Authorization"):
        pairs.append(("authorization", auth))
    return tuple(pairs)


@web.middleware
async def request_ids(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every request gets an id (the client's X-Request-ID, or a new one) that
    travels to the engine as gRPC metadata and comes back in the response."""
    request[REQUEST_ID] = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID]
    return response
