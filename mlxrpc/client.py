"""A small typed Python client over the gRPC stubs, sync and async.

    from mlxrpc.client import Client
    with Client("localhost:50051") as client:
        print(client.generate("Hello", max_tokens=20).text)
        for delta in client.stream([{"role": "user", "content": "Hi"}], max_tokens=20):
            print(delta.text, end="")

Errors arrive as ``MlxrpcError`` (with the gRPC code and the offending field),
never as return values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .v1 import inference_pb2 as pb
from .v1 import inference_pb2_grpc as pb_grpc

Prompt = str | list[dict[str, Any]] | list[int]
_FINISH = {
    pb.STOP_REASON_LENGTH: "length",
    pb.STOP_REASON_STOP_SEQUENCE: "stop",
    pb.STOP_REASON_EOS: "stop",
    pb.STOP_REASON_STOP_TOKEN: "stop",
    pb.STOP_REASON_TOOL_CALLS: "tool_calls",
}


class MlxrpcError(Exception):
    """A failed call: the gRPC status code, its message, and the bad field if any."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code, self.message, self.field = code, message, field

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> MlxrpcError:
        field_name = None
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                field_name = bad.field_violations[0].field if bad.field_violations else None
        return cls(error.code(), error.details() or "", field_name)  # type: ignore[attr-defined]


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    usage: Usage
    model: str = ""
    request_id: str = ""
    tool_calls: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Delta:
    """One stream message; the last one has ``finish_reason`` and ``usage``."""

    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    usage: Usage | None = None


def build_request(prompt: Prompt, *, model: str = "", max_tokens: int | None = None,
                  stop: list[str] | None = None, request_id: str = "", **sampling: Any) -> pb.GenerateRequest:
    """A GenerateRequest from a text prompt, chat messages or token ids."""
    request = pb.GenerateRequest(model=model, request_id=request_id)
    if isinstance(prompt, str):
        request.text = prompt
    elif prompt and isinstance(prompt[0], int):
        request.token_ids.ids.extend(prompt)  # type: ignore[arg-type]
    else:
        for message in prompt:  # type: ignore[union-attr]
            content = message.get("content") or ""
            out = request.chat.messages.add(role=message["role"])
            out.content.add(text=content if isinstance(content, str) else "".join(
                part.get("text", "") for part in content))
    if max_tokens is not None:
        request.stopping.max_tokens = max_tokens
    request.stopping.stop.extend(stop or [])
    for name, value in sampling.items():
        if value is not None:
            setattr(request.sampling, name, value)
    return request


def _usage(u: pb.Usage) -> Usage:
    return Usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens)


def _completion(r: pb.GenerateResponse) -> Completion:
    return Completion(
        text=r.text, token_ids=list(r.token_ids), finish_reason=_FINISH.get(r.finish.reason, "stop"),
        usage=_usage(r.finish.usage), model=r.model, request_id=r.request_id,
        tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments_json} for c in r.finish.tool_calls],
    )


def _delta(m: pb.GenerateStreamResponse) -> Delta:
    if m.HasField("finish"):
        return Delta(m.text, list(m.token_ids), _FINISH.get(m.finish.reason, "stop"), _usage(m.finish.usage))
    return Delta(m.text, list(m.token_ids))


def _credentials(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class Client:
    """Blocking client."""

    def __init__(self, target: str = "localhost:50051", *, api_key: str | None = None,
                 tls_ca: bytes | None = None, timeout: float | None = None) -> None:
        self._channel = (grpc.secure_channel(target, grpc.ssl_channel_credentials(tls_ca)) if tls_ca
                         else grpc.insecure_channel(target))
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._metadata = _credentials(api_key)
        self._timeout = timeout

    def generate(self, prompt: Prompt, **options: Any) -> Completion:
        try:
            return _completion(self._stub.Generate(build_request(prompt, **options),
                                                   metadata=self._metadata, timeout=self._timeout))
        except grpc.RpcError as error:
            raise MlxrpcError.from_rpc(error) from None

    def stream(self, prompt: Prompt, **options: Any) -> Iterator[Delta]:
        call = self._stub.StreamGenerate(build_request(prompt, **options), metadata=self._metadata,
                                         timeout=self._timeout)
        try:
            for message in call:
                yield _delta(message)
        except grpc.RpcError as error:
            raise MlxrpcError.from_rpc(error) from None
        finally:
            call.cancel()  # a consumer that stops early frees the server's slot

    def models(self) -> list[pb.Model]:
        try:
            return list(self._stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata).models)
        except grpc.RpcError as error:
            raise MlxrpcError.from_rpc(error) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client (grpc.aio); create it inside the event loop that uses it."""

    def __init__(self, target: str = "localhost:50051", *, api_key: str | None = None,
                 tls_ca: bytes | None = None, timeout: float | None = None) -> None:
        self._channel = (grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(tls_ca)) if tls_ca
                         else grpc.aio.insecure_channel(target))
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._metadata = _credentials(api_key)
        self._timeout = timeout

    async def generate(self, prompt: Prompt, **options: Any) -> Completion:
        try:
            return _completion(await self._stub.Generate(build_request(prompt, **options),
                                                         metadata=self._metadata, timeout=self._timeout))
        except grpc.aio.AioRpcError as error:
            raise MlxrpcError.from_rpc(error) from None

    async def stream(self, prompt: Prompt, **options: Any) -> AsyncIterator[Delta]:
        call = self._stub.StreamGenerate(build_request(prompt, **options), metadata=self._metadata,
                                         timeout=self._timeout)
        try:
            async for message in call:
                yield _delta(message)
        except grpc.aio.AioRpcError as error:
            raise MlxrpcError.from_rpc(error) from None
        finally:
            call.cancel()

    async def models(self) -> list[pb.Model]:
        try:
            reply = await self._stub.ListModels(pb.ListModelsRequest(), metadata=self._metadata)
            return list(reply.models)
        except grpc.aio.AioRpcError as error:
            raise MlxrpcError.from_rpc(error) from None

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
