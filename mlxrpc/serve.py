"""`mlxrpc serve`: the engine's gRPC server, then the REST sidecar workers.

Start order makes health truthful: gRPC binds first and answers NOT_SERVING
while models load and warm up, then turns SERVING.

SIGTERM/SIGINT drain, in this order: health turns NOT_SERVING and the engine
refuses new requests (UNAVAILABLE / 503) at once; the sidecars stop listening
and finish their streams; running requests get the grace period, then any
still running end with UNAVAILABLE (an in-band error event on SSE); gRPC stops
last, so every final status reaches its client. Exit code 0.

If the engine core dies, every request has already failed; the server stops
quickly and exits 70, so its supervisor (systemd, Kubernetes) restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .blas import describe
from .demo_model import DEMO_MODEL_ID, ensure_demo_model
from .engine.engine import Engine
from .engine.registry import ModelSource
from .service.server import GrpcServer
from .settings import EngineSettings, McpSettings, ServiceSettings, Settings

if TYPE_CHECKING:
    from .distributed.world import World

log = logging.getLogger(__name__)

# Exit code when the engine has died (BSD's EX_SOFTWARE): restart me.
EXIT_ENGINE_FAILED = 70
# Seconds the final statuses of cut requests get to reach their clients.
FINAL_STATUS_SECONDS = 2.0
# Tests only: "engine_death_after_tokens=N" makes the engine core fail after N tokens.
TEST_FAULTS_ENV = "MLXRPC_TEST_FAULTS"


def model_sources(settings: Settings) -> list[ModelSource]:
    if settings.model:
        return [ModelSource.parse(spec) for spec in settings.model]
    log.info("no --model given: serving the built-in demo model (random weights)")
    return [ModelSource(id=DEMO_MODEL_ID, source=str(ensure_demo_model()))]


@dataclass
class EngineServer:
    """A running engine behind its gRPC server."""

    engine: Engine
    grpc: GrpcServer
    grpc_port: int
    # Where co-located sidecars connect (a Unix socket, plaintext even with TLS).
    local_target: str
    sidecars: list = field(default_factory=list)
    # Set once the engine core has died (after it failed every request).
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    _socket_dir: tempfile.TemporaryDirectory | None = None

    async def begin_drain(self) -> None:
        """Health NOT_SERVING and new requests refused; running ones go on."""
        await self.grpc.health.enter_graceful_shutdown()
        self.engine.stop_accepting()

    async def finish_requests(self, grace: float) -> None:
        """Waits up to ``grace`` seconds for running requests, then ends the rest with UNAVAILABLE."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.engine.stats().in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await loop.run_in_executor(None, self.engine.shutdown)

    async def stop(self, grace: float) -> None:
        await self.grpc.stop(grace)
        await self.grpc.mcp.close()
        await asyncio.get_running_loop().run_in_executor(None, self.engine.shutdown)
        if self._socket_dir is not None:
            self._socket_dir.cleanup()


async def start_engine_server(settings: Settings, world: World | None = None) -> EngineServer:
    loop = asyncio.get_running_loop()
    channel = None
    if world is not None:  # rank 0 of a distributed world
        from .distributed.channel import Channel

        channel = Channel(world, on_stall=lambda: _stalled(loop, grpc_server))
    engine = Engine(settings.part(EngineSettings), channel)
    grpc_server = GrpcServer(engine, settings.part(ServiceSettings), settings.part(McpSettings))
    socket_dir = tempfile.TemporaryDirectory(prefix="mlxrpc-")
    local_socket = str(Path(socket_dir.name) / "engine.sock")
    port = await grpc_server.start(settings.host, settings.grpc_port, local_socket)
    grpc_server.mcp.start()  # MCP servers connect while the models load
    failed = asyncio.Event()

    def on_failure() -> None:  # queued after the core's last deliveries to the requests
        failed.set()
        loop.create_task(grpc_server.mark_failed())

    engine.on_failure(lambda exc: loop.call_soon_threadsafe(on_failure))
    sources = await loop.run_in_executor(None, model_sources, settings)
    await loop.run_in_executor(None, engine.start, sources)
    await grpc_server.mcp.wait_ready()
    await grpc_server.mark_ready()
    return EngineServer(engine=engine, grpc=grpc_server, grpc_port=port,
                        local_target=f"unix:{local_socket}", failed=failed, _socket_dir=socket_dir)


def _stalled(loop: asyncio.AbstractEventLoop, grpc_server: GrpcServer) -> None:
    """The watchdog's last act on rank 0 (its own thread): health NOT_SERVING, then the exit."""
    loop.call_soon_threadsafe(lambda: loop.create_task(grpc_server.mark_failed()))
    time.sleep(0.5)


def inject_test_faults(engine: Engine, spec: str) -> None:
    """Arms the faults of MLXRPC_TEST_FAULTS (comma-separated NAME=VALUE; tests only)."""
    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name != "engine_death_after_tokens":
            raise ValueError(f"{TEST_FAULTS_ENV}: unknown fault {name!r}")
        log.warning("test fault armed: the engine core fails after %s tokens", value)
        engine.inject_core_fault(int(value))


async def serve(settings: Settings, *, with_sidecar: bool = True, world: World | None = None) -> int:
    """Serves until SIGTERM/SIGINT (exit 0) or the engine's death (exit 70)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    server = await start_engine_server(settings, world)
    if faults := os.environ.get(TEST_FAULTS_ENV):
        inject_test_faults(server.engine, faults)
    if with_sidecar:
        from .sidecars import start_sidecars

        server.sidecars = await start_sidecars(settings, [server.local_target])
    log.info("%s", describe())
    log.info("ready: gRPC on port %d", server.grpc_port)
    waits = [loop.create_task(stop_requested.wait()), loop.create_task(server.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    if server.failed.is_set():
        log.critical("the engine failed: stopping with exit code %d for the supervisor to restart the server",
                     EXIT_ENGINE_FAILED)
        await shutdown(server, 0.0)
        return EXIT_ENGINE_FAILED
    log.info("stopping: draining in-flight requests for up to %.0fs", settings.grace_period)
    await shutdown(server, settings.grace_period)
    log.info("stopped")
    return EXIT_ENGINE_FAILED if server.failed.is_set() else 0


async def shutdown(server: EngineServer, grace: float) -> None:
    """The drain: refuse new requests, let the sidecars and running requests finish, stop gRPC."""
    await server.begin_drain()
    sidecars = None
    if server.sidecars:
        from .sidecars import stop_sidecars

        sidecars = asyncio.get_running_loop().create_task(stop_sidecars(server.sidecars, grace))
    await server.finish_requests(grace)
    if sidecars is not None:
        await sidecars
    await server.stop(FINAL_STATUS_SECONDS)
