"""Errors on the REST surface: one ladder from any failure to an ApiError, HTTP
status from the canonical gRPC table, and one middleware per error dialect
(OpenAI's body here; a surface with its own, like Anthropic's, makes a Dialect).

The body's ``type`` is what OpenAI sends: ``invalid_request_error`` for every
4xx (OpenAI uses it for a bad key, an unknown model and a bad parameter alike)
and ``server_error`` for every 5xx. The ``code`` is one snake_case vocabulary:
OpenAI's own codes where OpenAI has one (``model_not_found``,
``context_length_exceeded``, ``rate_limit_exceeded``, ``invalid_api_key``,
``invalid_value``), else the engine's ErrorInfo reason in lower case.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import BaseModel, ValidationError

from .answers import json_answer
from .context import REQUEST_ID

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# google.rpc.Code → HTTP, as in google/rpc/code.proto and grpc-gateway, except
# UNIMPLEMENTED: a feature this server lacks is the request's problem, and a
# 501 would make the openai SDK retry it (it retries every 5xx).
HTTP_STATUS = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 400,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# ErrorInfo.reason (or, without one, the status code's name) → REST ``code``.
# Reasons not listed go out lower-cased (out_of_memory, grammar_failed, ...).
CODES = {
    "INVALID_ARGUMENT": "invalid_value",
    "MALFORMED_REQUEST": "invalid_value",
    "FAILED_PRECONDITION": "invalid_value",
    "OUT_OF_RANGE": "invalid_value",
    "MODEL_NOT_FOUND": "model_not_found",
    "CONTEXT_LENGTH_EXCEEDED": "context_length_exceeded",
    "QUEUE_FULL": "rate_limit_exceeded",
    "RESOURCE_EXHAUSTED": "rate_limit_exceeded",
    "UNIMPLEMENTED": "unsupported_value",
    "UNAUTHENTICATED": "invalid_api_key",
    "NOT_SERVING": "service_unavailable",
    "SHUTTING_DOWN": "server_shutting_down",
    "UNAVAILABLE": "service_unavailable",
    "DEADLINE_EXCEEDED": "timeout",
    "ENGINE_FAILED": "engine_failed",
    "INTERNAL": "server_error",
    "UNKNOWN": "server_error",
    "DATA_LOSS": "server_error",
}

# Failures a retry cannot fix: the openai SDK honours ``x-should-retry: false``.
_NOT_RETRYABLE = {500}


def error_type(status: int) -> str:
    return "invalid_request_error" if status < 500 else "server_error"


class ErrorDetail(BaseModel):
    message: str
    type: Literal["invalid_request_error", "server_error"]
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """OpenAI's error body; also the payload of an in-band SSE error event."""

    error: ErrorDetail


class ApiError(Exception):
    """An error to answer with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        if status in _NOT_RETRYABLE:
            self.headers.setdefault("x-should-retry", "false")

    def model(self) -> ErrorBody:
        """OpenAI's error body."""
        return ErrorBody(error=ErrorDetail(message=self.message, type=error_type(self.status), param=self.param,
                                           code=self.code))

    def body(self) -> dict[str, Any]:
        return self.model().model_dump()

    def response(self) -> web.Response:
        return json_answer(self.model(), self.status, self.headers)


def server_error() -> ApiError:
    """A bug in the sidecar: the details go to the log, the client gets a short 500."""
    return ApiError(500, "The server had an error while processing your request.",
                    code="server_error")


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Maps a gRPC failure, reading google.rpc details for the param and reason."""
    status = HTTP_STATUS.get(error.code(), 500)
    param = None
    reason = error.code().name
    try:
        rich = rpc_status.from_call(error)
    except ValueError:
        rich = None
    for detail in rich.details if rich is not None else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations:
                param = bad.field_violations[0].field
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or reason
    if error.code() == grpc.StatusCode.UNAVAILABLE and rich is None:
        message = "the inference engine is unavailable"
    else:
        message = error.details() or error.code().name
    return ApiError(status, message, param=param, code=CODES.get(reason, reason.lower()))


def from_http_error(error: web.HTTPException, request: web.Request) -> ApiError:
    """aiohttp's own refusals (no route, wrong method, body too large) in OpenAI's shape."""
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return ApiError(413, error.text or "request body too large", code="body_too_large")
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        return ApiError(405, f"Method {request.method} is not allowed on {request.path}; "
                        f"use {allowed}", code="method_not_allowed", headers={"Allow": allowed})
    if isinstance(error, web.HTTPNotFound):
        return ApiError(404, f"Invalid URL ({request.method} {request.path})", code="unknown_url")
    return ApiError(error.status, error.reason, code=error.reason.lower().replace(" ", "_"))


_UNION_TAG = re.compile(r"^(str|int|float|bool|none|constrained-\w+|list\[.*\]|dict\[.*\]|literal\[.*\]|"
                        r"function-after\[.*\]|[A-Z]\w*)$")


def _param(loc: tuple) -> str | None:
    """``messages[0].content`` from pydantic's loc, without its union-member tags."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not _UNION_TAG.match(part):
            param += f".{part}" if param else part
    return param or None


def _rank(error: Any) -> tuple[bool, int]:
    """A union reports one error per member: the member whose type the input
    has (its error is about the value), and the one that got furthest, names
    the real problem."""
    kind = error["type"]
    mismatch = kind.endswith(("_type", "_parsing")) or (
        kind == "literal_error" and not isinstance(error.get("input"), (str, int, float)))
    return not mismatch, len(_param(error["loc"]) or "")


def from_validation_error(error: ValidationError) -> ApiError:
    first = max(error.errors(), key=_rank)
    param = _param(first["loc"])
    message = f"{param}: {first['msg']}" if param else first["msg"]
    return ApiError(400, message, param=param, code="invalid_value")


def failure_of(error: Exception, request: web.Request) -> ApiError:
    """Any failure of a handler as the ApiError to answer with; a bug's
    traceback goes to the log and the client gets a short 500."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, grpc.aio.AioRpcError):
        return from_rpc_error(error)
    if isinstance(error, web.HTTPException):
        return from_http_error(error, request)
    if isinstance(error, UnicodeEncodeError):  # protobuf strings refuse lone surrogates
        return ApiError(400, "the request holds text that is not valid Unicode (a lone surrogate)",
                        code="invalid_value")
    log.exception("request %s failed", request.get(REQUEST_ID))
    return server_error()


@dataclass(frozen=True)
class Dialect:
    """How one API writes its error body: the model the OpenAPI document
    shows, the writer, and the proto field names its clients know by another name."""

    body: type[BaseModel]
    write: Callable[[ApiError, web.Request], BaseModel]
    # proto field name → REST name, in messages and params (the Embed RPC's ``inputs`` is REST's ``input``).
    renames: tuple[tuple[str, str], ...] = ()

    def renamed(self, error: ApiError) -> ApiError:
        """``error`` with the proto's field names as this API's clients sent them."""
        for proto, rest in self.renames:
            error.message = re.sub(rf"\b{proto}\b", rest, error.message)
            error.param = re.sub(rf"\b{proto}\b", rest, error.param) if error.param else error.param
        return error

    def respond(self, error: ApiError, request: web.Request) -> web.Response:
        error = self.renamed(error)
        return json_answer(self.write(error, request), error.status, error.headers)

    def middleware(self, handlers: Collection[Handler] | None = None) -> Callable:
        """Answers every failure of ``handlers`` (of any route when None, aiohttp's
        own 404 and 405 included) in this dialect, before the first byte goes out."""

        @web.middleware
        async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
            if handlers is not None and request.match_info.handler not in handlers:
                return await handler(request)
            try:
                return await handler(request)
            except web.HTTPException as error:
                if error.status < 400:
                    raise
                failure = failure_of(error, request)
            except ConnectionError:
                raise  # the client went away; nobody to answer
            except Exception as error:
                failure = failure_of(error, request)
            return self.respond(failure, request)

        return errors


OPENAI = Dialect(ErrorBody, lambda error, _request: error.model())
