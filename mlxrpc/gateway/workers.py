"""The sidecar's process model: N stateless gateway processes on one HTTP port.

Each worker is ``mlxrpc gateway`` bound with SO_REUSEPORT, so the kernel
spreads connections over them; all of them call the same engine over gRPC, so
a model is loaded once however many workers there are (FastMLX's workers, but
without a model copy per worker).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from ..blas import child_env
from ..settings import Settings, resolve_workers
from .app import create_app, start_app
from .upstream import UpstreamTLS

log = logging.getLogger(__name__)

READY = "MLXRPC-GATEWAY-READY"


async def start_sidecars(
    settings: Settings, upstreams: list[str]
) -> list[asyncio.subprocess.Process]:
    """Starts the workers and waits until each listens; returns their processes."""
    count = resolve_workers(settings.workers)
    port = settings.http_port
    processes: list[asyncio.subprocess.Process] = []
    for _ in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlxrpc", "gateway",
            *(arg for u in upstreams for arg in ("--upstream", u)), "--host", settings.host, "--http-port", str(port),
            "--workers", "1", "--max-message-bytes", str(settings.max_message_bytes),
            "--log-level", settings.log_level, *(["--reuse-port"] if count > 1 else []),
            *(arg for origin in settings.cors_origin for arg in ("--cors-origin", origin)),
            stdout=asyncio.subprocess.PIPE, env=child_env(),
        )
        processes.append(process)
        port = await _wait_ready(process)
    log.info("REST sidecar on port %d (%d worker%s)", port, count, "s" * (count > 1))
    return processes


async def _wait_ready(process: asyncio.subprocess.Process) -> int:
    assert process.stdout is not None
    while line := await process.stdout.readline():
        text = line.decode().strip()
        if text.startswith(READY):
            return int(text.split()[1])
    raise RuntimeError(f"the REST sidecar exited early (code {await process.wait()})")


async def stop_sidecars(processes: list[asyncio.subprocess.Process], grace: float) -> None:
    """SIGTERM each worker (they drain), then kill what outlives the grace period."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            await asyncio.wait_for(process.wait(), grace + 5)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()


def run_gateway(settings: Settings, upstreams: list[str] | None, *, reuse_port: bool,
                tls: UpstreamTLS | None = None) -> int:
    """``mlxrpc gateway``: one worker, or a supervisor of several."""
    upstreams = upstreams or [
        u.strip() for u in os.environ.get("MLXRPC_UPSTREAM", "127.0.0.1:50051").split(",") if u
    ]
    workers = resolve_workers(settings.workers)
    if workers > 1:
        return asyncio.run(_supervise(settings, upstreams))
    return asyncio.run(_serve_one(settings, upstreams, reuse_port, tls))


async def _serve_one(settings: Settings, upstreams: list[str], reuse_port: bool,
                     tls: UpstreamTLS | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(upstreams, settings.max_message_bytes, tls, settings.cors_origin)
    runner, port = await start_app(app, settings.host, settings.http_port,
                                   reuse_port=reuse_port, grace=settings.grace_period)
    print(f"{READY} {port}", flush=True)
    log.info("REST sidecar listening on %s:%d → %s", settings.host, port, ",".join(upstreams))
    await stop.wait()
    await runner.cleanup()
    return 0


async def _supervise(settings: Settings, upstreams: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    processes = await start_sidecars(settings, upstreams)
    await stop.wait()
    await stop_sidecars(processes, settings.grace_period)
    return 0
