"""Small helpers for building requests and reading gRPC errors in tests."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlxrpc.v1 import inference_pb2 as pb


def text_request(prompt: str = "Hello world", *, max_tokens: int = 16, temperature: float = 0.0,
                 model: str = "llama", **stopping: object) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=model, text=prompt)
    request.stopping.max_tokens = max_tokens
    request.sampling.temperature = temperature
    for key, value in stopping.items():
        field = getattr(request.stopping, key)
        if isinstance(value, list):
            field.extend(value)
        else:
            setattr(request.stopping, key, value)
    return request


def chat_request(content: str = "Hi there", *, max_tokens: int = 16,
                 model: str = "llama") -> pb.GenerateRequest:
    request = pb.GenerateRequest(model=model)
    request.chat.messages.add(role="user").content.add(text=content)
    request.stopping.max_tokens = max_tokens
    request.sampling.temperature = 0.0
    return request


def bad_request_field(error: grpc.aio.AioRpcError) -> str | None:
    """The field named by the google.rpc.BadRequest detail, if any."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return None


def error_reason(error: grpc.aio.AioRpcError) -> str | None:
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None
