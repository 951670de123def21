"""Errors on the REST surface: OpenAI's error body, HTTP status from the canonical gRPC table."""

from __future__ import annotations

import re

import grpc
from aiohttp import web
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from pydantic import ValidationError

# google.rpc.Code → HTTP, as in google/rpc/code.proto and grpc-gateway.
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
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    499: "cancelled",
    501: "not_implemented_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error to answer with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": ERROR_TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def from_rpc_error(error: grpc.aio.AioRpcError) -> ApiError:
    """Maps a gRPC failure, reading google.rpc details for the param and reason."""
    status = HTTP_STATUS.get(error.code(), 500)
    param = code = None
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
            code = info.reason.lower()
    if error.code() == grpc.StatusCode.UNAVAILABLE and rich is None:
        message = "the inference engine is unavailable"
    else:
        message = error.details() or error.code().name
    return ApiError(status, message, param=param, code=code)


_UNION_TAG = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\]|[A-Z]\w*)$")


def _param(loc: tuple) -> str | None:
    """``messages[0].content`` from pydantic's loc, without its union-member tags."""
    param = ""
    for part in loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not _UNION_TAG.match(part):
            param += f".{part}" if param else part
    return param or None


def from_validation_error(error: ValidationError) -> ApiError:
    first = error.errors()[0]
    param = _param(first["loc"])
    message = f"{param}: {first['msg']}" if param else first["msg"]
    return ApiError(400, message, param=param, code="invalid_value")
