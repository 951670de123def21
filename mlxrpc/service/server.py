"""The grpc.aio server: inference, health, reflection, graceful stop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ..engine.engine import Engine
from ..settings import McpSettings, ServiceSettings
from ..v1 import inference_pb2 as pb
from ..v1 import inference_pb2_grpc as pb_grpc
from .auth import ApiKeyInterceptor
from .interceptor import StatusInterceptor
from .mcp import McpManager
from .mcp_servicer import McpServicer
from .reflection import enable_reflection
from .response_store import ResponseStoreServicer
from .servicer import InferenceServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        # Keep idle client connections alive through proxies, and refuse abusive pings.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", 0),
    ]


class GrpcServer:
    """Serves ``engine`` on gRPC. Health stays NOT_SERVING until ``mark_ready``."""

    def __init__(self, engine: Engine, settings: ServiceSettings, mcp: McpSettings | None = None) -> None:
        mcp = mcp or McpSettings()
        self.engine = engine
        self.settings = settings
        self.health = health.aio.HealthServicer()
        self._server = grpc.aio.server(
            options=server_options(settings),
            interceptors=[ApiKeyInterceptor(settings.api_key, settings.admin_key), StatusInterceptor(engine.metrics)],
        )
        # The MCP servers of --mcp-config (serve.py connects and closes them).
        self.mcp = McpManager.from_settings(mcp)
        pb_grpc.add_InferenceServicer_to_server(InferenceServicer(engine, settings, self.mcp, mcp), self._server)
        pb_grpc.add_McpServicer_to_server(McpServicer(self.mcp), self._server)
        pb_grpc.add_ResponseStoreServicer_to_server(ResponseStoreServicer(settings), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        services = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]
        enable_reflection((*services, health.SERVICE_NAME), self._server)
        self.port = 0
        self._model_names: set[str] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int, local_socket: str = "") -> int:
        """Binds and starts; returns the bound port (useful with port 0).

        ``local_socket`` adds a plaintext Unix-socket listener for co-located
        sidecars: reachable by local processes only, and cheaper than TCP.
        """
        await self._set_all(NOT_SERVING)
        address = f"{_bracket(host)}:{port}"
        credentials = tls_credentials(self.settings)
        self.port = (
            self._server.add_secure_port(address, credentials)
            if credentials is not None
            else self._server.add_insecure_port(address)
        )
        if local_socket:
            self._server.add_insecure_port(f"unix:{local_socket}")
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {host}:{port}")
        await self._server.start()
        loop = asyncio.get_running_loop()
        self.engine.on_models_changed(lambda: loop.call_soon_threadsafe(self._spawn, self.refresh_models()))
        log.info("gRPC listening on %s:%d", host, self.port)
        return self.port

    def _spawn(self, coro: Any) -> None:
        """Runs ``coro`` as a task, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def mark_ready(self) -> None:
        await self._set_all(SERVING)
        await self.refresh_models()

    async def refresh_models(self) -> None:
        """Per-model health: SERVING for every loaded id and alias, NOT_SERVING for gone ones."""
        names = {n for m in self.engine.describe_models() for n in (m.id, *m.aliases)}
        for name in names:
            await self.health.set(name, SERVING)
        for name in set(self._model_names) - names:
            await self.health.set(name, NOT_SERVING)
        self._model_names = names

    async def mark_failed(self) -> None:
        await self._set_all(NOT_SERVING)

    async def stop(self, grace: float) -> None:
        """Graceful stop: NOT_SERVING, no new requests, in-flight ones get ``grace`` seconds."""
        await self.health.enter_graceful_shutdown()
        self.engine.stop_accepting()
        await self._server.stop(grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()

    async def _set_all(self, status: int) -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)


def tls_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert:
        return None
    if not settings.tls_key:
        raise ValueError("--tls-cert needs --tls-key")
    ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
