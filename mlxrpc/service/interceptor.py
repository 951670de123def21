"""The server interceptor every mlxrpc handler runs inside: statuses and accounting.

Handlers only raise ``EngineError``; this one place turns it into the gRPC
status with google.rpc details, so no handler carries an except-ladder. It
also parses requests itself (grpc.aio answers a request that does not parse,
and any exception a handler lets escape, with UNKNOWN): a malformed request is
INVALID_ARGUMENT and an escaped exception a short INTERNAL naming the request
id (the traceback goes to the log). For the methods that do the work it
counts the call by status code and writes one access-log line.

grpc.aio's ``ServerInterceptor`` returns a method handler, so wrapping the
handler's behaviour catches a server-streaming handler's exceptions as well as
a unary one's: the wrapper iterates the handler's async generator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from ..engine.errors import EngineError, ErrorCode
from ..metrics import Metrics
from .status import abort_with

log = logging.getLogger(__name__)

# The calls counted in mlxrpc_requests_total and written to the access log.
ACCOUNTED = frozenset(f"/mlxrpc.v1.Inference/{m}" for m in ("Generate", "StreamGenerate", "Embed", "Tokenize"))


def _parse(deserializer: Callable[[bytes], Any] | None, raw: bytes) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except (DecodeError, UnicodeDecodeError, ValueError) as exc:
        raise EngineError(ErrorCode.INVALID_ARGUMENT, "the request message does not parse",
                          reason="MALFORMED_REQUEST") from exc


def _is_abort(exc: BaseException) -> bool:
    """context.abort raises; that exception must pass through untouched."""
    return isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError"


def _request_id(context: grpc.aio.ServicerContext) -> str:
    return dict(context.invocation_metadata() or ()).get("x-request-id", "-")


class _Call:
    """One call's outcome: the status code it ends with, logged and counted at the end."""

    def __init__(self, method: str, context: grpc.aio.ServicerContext, metrics: Metrics | None) -> None:
        self.method = method.rsplit("/", 1)[-1]
        self.context = context
        self.metrics = metrics
        self.code = "OK"
        self.started = time.perf_counter()
        self.ended = False

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with ``exc``'s status (raises, as context.abort does)."""
        if isinstance(exc, asyncio.CancelledError):
            self.code = "CANCELLED"
            raise exc
        if _is_abort(exc):
            raise exc
        if not isinstance(exc, EngineError):
            log.error("%s failed unexpectedly (request_id=%s)", self.method, _request_id(self.context),
                      exc_info=exc)
            exc = EngineError(ErrorCode.INTERNAL, f"internal error (request id {_request_id(self.context)})")
        self.code = exc.code.value
        self.end()  # before the status goes out: a client that sees it finds it counted
        await abort_with(self.context, exc)

    def end(self) -> None:
        """Counts and logs the call, once."""
        if self.metrics is None or self.ended:
            return
        self.ended = True
        self.metrics.requests.labels(self.method, self.code).inc()
        log.info("access method=%s request_id=%s code=%s seconds=%.3f", self.method,
                 _request_id(self.context), self.code, time.perf_counter() - self.started)


def _unary(handler: grpc.RpcMethodHandler, method: str, metrics: Metrics | None) -> grpc.RpcMethodHandler:
    behavior, deserializer = handler.unary_unary, handler.request_deserializer

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        outcome = _Call(method, context, metrics)
        try:
            return await behavior(_parse(deserializer, raw), context)
        except (Exception, asyncio.CancelledError) as exc:
            await outcome.fail(exc)
        finally:
            outcome.end()

    return grpc.unary_unary_rpc_method_handler(call, response_serializer=handler.response_serializer)


def _server_stream(handler: grpc.RpcMethodHandler, method: str, metrics: Metrics | None) -> grpc.RpcMethodHandler:
    behavior, deserializer = handler.unary_stream, handler.request_deserializer

    async def call(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        outcome = _Call(method, context, metrics)
        try:
            async for message in behavior(_parse(deserializer, raw), context):
                yield message
        except (Exception, asyncio.CancelledError) as exc:  # not GeneratorExit: a closed stream
            await outcome.fail(exc)
        finally:
            outcome.end()

    return grpc.unary_stream_rpc_method_handler(call, response_serializer=handler.response_serializer)


class StatusInterceptor(grpc.aio.ServerInterceptor):
    """Wraps this package's unary and server-streaming handlers (others pass through)."""

    def __init__(self, metrics: Metrics | None = None, prefixes: tuple[str, ...] = ("/mlxrpc.",)) -> None:
        self._metrics = metrics
        self._prefixes = prefixes

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefixes):
            return handler
        metrics = self._metrics if details.method in ACCOUNTED else None
        if handler.unary_unary is not None:
            return _unary(handler, details.method, metrics)
        if handler.unary_stream is not None:
            return _server_stream(handler, details.method, metrics)
        return handler
