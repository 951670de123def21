"""Small helpers for tests: building requests, reading gRPC errors, missing dependencies."""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import struct
from types import ModuleType
from typing import NoReturn

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from mlxrpc.v1 import inference_pb2 as pb


def unavailable(reason: str) -> NoReturn:
    """A test dependency or download is missing: a skip locally, a failure under CI=true.

    CI installs everything the suite needs, so there a missing piece is a
    broken setup that a skip would hide.
    """
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing test dependency fails the run)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str) -> ModuleType:
    """``name`` imported, or ``unavailable`` (also when one of its own dependencies is missing)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        unavailable(f"{name} cannot be imported: {exc}")


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


class FakeDns(asyncio.DatagramProtocol):
    """A DNS server on loopback that answers every A query with ``addresses``.

    gRPC's ``dns://SERVER/name:port`` target asks SERVER, so a test can put a
    name in front of several engines without a hosts file or a real zone.
    Other record types get an empty answer.
    """

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = [socket.inet_aton(a) for a in addresses]
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def start(cls, addresses: list[str]) -> tuple[FakeDns, int]:
        """The server and its UDP port on 127.0.0.1."""
        loop = asyncio.get_running_loop()
        _, dns = await loop.create_datagram_endpoint(lambda: cls(addresses), local_addr=("127.0.0.1", 0))
        assert dns.transport is not None
        return dns, dns.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        end = 12
        while data[end]:  # the question's name: length-prefixed labels
            end += data[end] + 1
        qtype = struct.unpack("!H", data[end + 1:end + 3])[0]
        question = data[12:end + 5]
        answers = self.addresses if qtype == 1 else []
        header = data[:2] + struct.pack("!HHHHH", 0x8180, 1, len(answers), 0, 0)
        records = b"".join(struct.pack("!HHHIH", 0xC00C, 1, 1, 1, 4) + a for a in answers)
        assert self.transport is not None
        self.transport.sendto(header + question + records, addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
