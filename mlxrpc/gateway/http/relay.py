"""One StreamGenerate call relayed as server-sent events, for every streaming API.

The relay owns what all of them share: the first message is awaited before any
byte goes out (so a refusal is a proper HTTP error in the API's own body), the
stream then carries what an API-specific ``EventBuilder`` makes of each
message, and every way a stream can end early (a gRPC error, an engine that
stops sending, a bug, the drain's grace period running out) becomes that
API's in-band error. A client that goes away cancels the call, which frees
the engine slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
from aiohttp import web

from ...v1 import inference_pb2 as pb
from . import sse
from .context import REQUEST_ID, REQUEST_ID_HEADER, STREAMS, UPSTREAM
from .cors import CORS_ORIGIN
from .errors import ApiError, from_rpc_error, server_error

log = logging.getLogger(__name__)

# An API's event: a JSON dict or its protocol model; only the builder's own encode reads it.
Event = Any


class EventBuilder(Protocol):
    """Turns one stream's proto messages into an API's events; pure, no I/O."""

    # Bytes that close the stream after the last event (OpenAI's ``data: [DONE]``).
    done: bytes

    def start(self, model: str) -> list[Event]:
        """Events that open the stream, once the first message names the model."""

    def feed(self, message: pb.GenerateStreamResponse) -> list[Event]:
        """Events for one message (the last one too, before ``finish``)."""

    def finish(self, finish: pb.Finish) -> list[Event]:
        """Events that end a stream that ran to its end."""

    def fail(self, error: ApiError) -> list[Event]:
        """The API's in-band error, after which the stream ends."""

    def encode(self, event: Event) -> bytes:
        """One event as SSE bytes."""


def shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down", code="server_shutting_down")


def _cut(cancelled: asyncio.CancelledError) -> ApiError:
    """The error for a stream whose call the drain cut (app.start_app); a cancelled task re-raises."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():  # the client went away, or aiohttp gave up
        raise cancelled
    return shutting_down()


def _headers(request: web.Request) -> dict[str, str]:
    """Headers the middlewares would add, sent now because SSE sends headers early."""
    headers = {REQUEST_ID_HEADER: request[REQUEST_ID]}
    if origin := request.get(CORS_ORIGIN):
        headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
    return headers


async def relay(request: web.Request, proto: pb.GenerateRequest, builder: EventBuilder,
                metadata: tuple[tuple[str, str], ...],
                on_finish: Callable[[list[Event]], Awaitable[None]] | None = None,
                headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Streams one StreamGenerate call through ``builder``.

    ``on_finish`` sees (and may amend) the final events of a stream that ran
    to its end before they are sent: the Responses API stores the response there.
    ``headers`` go out with the stream's own.
    """
    call = request.app[UPSTREAM].inference.StreamGenerate(proto, metadata=metadata)
    messages: AsyncIterator[pb.GenerateStreamResponse] = call.__aiter__()
    request.app[STREAMS].add(call)
    try:
        try:
            message = await messages.__anext__()
        except StopAsyncIteration:
            raise ApiError(502, "the engine closed the stream without a result") from None
        except asyncio.CancelledError as cancelled:
            raise _cut(cancelled) from None
        response = await sse.open_stream(request, {**_headers(request), **(headers or {})})
        events = builder.start(message.model)
        try:
            while True:
                events += builder.feed(message)
                if message.HasField("finish"):
                    break
                if events:
                    await response.write(b"".join(builder.encode(e) for e in events))
                events = []
                message = await messages.__anext__()
            final = builder.finish(message.finish)
            if on_finish is not None:
                await on_finish(final)
            events += final
        except grpc.aio.AioRpcError as error:
            events += builder.fail(from_rpc_error(error))
        except asyncio.CancelledError as cancelled:
            events += builder.fail(_cut(cancelled))
        except StopAsyncIteration:
            events += builder.fail(ApiError(502, "the engine ended the stream early"))
        except ConnectionError:
            raise  # the client went away
        except Exception:  # a bug: the stream still ends the way clients expect
            log.exception("stream of request %s failed", request[REQUEST_ID])
            events += builder.fail(server_error())
        await response.write(b"".join(builder.encode(e) for e in events) + builder.done)
        await response.write_eof()
        return response
    finally:
        call.cancel()  # no-op once the call has finished
        request.app[STREAMS].discard(call)


async def collect(request: web.Request, proto: pb.GenerateRequest, builder: EventBuilder,
                  metadata: tuple[tuple[str, str], ...]) -> list[Event]:
    """The events one StreamGenerate call makes through ``builder``, whole, for a
    non-streamed answer (its API folds them); a failure raises, as a unary call's does."""
    call = request.app[UPSTREAM].inference.StreamGenerate(proto, metadata=metadata)
    request.app[STREAMS].add(call)
    try:
        events: list[Event] = []
        started = False
        async for message in call:
            if not started:
                events += builder.start(message.model)
                started = True
            events += builder.feed(message)
            if message.HasField("finish"):
                return events + builder.finish(message.finish)
        raise ApiError(502, "the engine ended the stream without a result")
    finally:
        call.cancel()
        request.app[STREAMS].discard(call)
