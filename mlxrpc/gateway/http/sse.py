"""Server-sent events: one ``data:`` line per message (OpenAI), or an ``event:``
line naming it first (Anthropic, Responses); flushed as written."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

DONE = b"data: [DONE]\n\n"


async def open_stream(request: web.Request, extra: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            **extra,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "Connection": "keep-alive",
            # Tell nginx-style proxies not to buffer the stream.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def encode(payload: dict[str, Any]) -> bytes:
    return b"data: " + _json(payload) + b"\n\n"


def encode_named(event: dict[str, Any]) -> bytes:
    """An event named by its ``type``, as Anthropic's and the Responses API's streams send them."""
    return f"event: {event['type']}\n".encode() + b"data: " + _json(event) + b"\n\n"
