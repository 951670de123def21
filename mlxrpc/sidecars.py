"""The sidecar's process model: N stateless gateway processes on one HTTP port.

Each worker is ``mlxrpc gateway`` bound with SO_REUSEPORT, so the kernel
spreads connections over them; all of them call the same engine over gRPC, so
a model is loaded once however many workers there are (FastMLX's workers, but
without a model copy per worker).

A worker dies with the process that started it, however that one ends
(``kill -9``, the OOM killer): an orphan would keep the HTTP port and answer
503 forever. On Linux the kernel signals the worker (PR_SET_PDEATHSIG);
everywhere, the worker's stdin is a pipe only the parent writes to, and its
end of file means the parent is gone.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys

from .blas import child_env
from .gateway.app import create_app, start_app
from .gateway.http.upstream import UpstreamTLS
from .settings import Settings, resolve_workers

log = logging.getLogger(__name__)

READY = "MLXRPC-GATEWAY-READY"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


async def start_sidecars(
    settings: Settings, upstreams: list[str], tls: UpstreamTLS | None = None
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
            "--grace-period", str(settings.grace_period),
            "--log-level", settings.log_level, *(["--reuse-port"] if count > 1 else []),
            *(arg for origin in settings.cors_origin for arg in ("--cors-origin", origin)),
            *(tls.args if tls is not None else ()), "--parent-pid", str(os.getpid()),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=child_env(),
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
                tls: UpstreamTLS | None = None, parent_pid: int | None = None) -> int:
    """``mlxrpc gateway``: one worker, or a supervisor of several.

    ``parent_pid``: started by that process (``mlxrpc serve`` or a supervisor),
    with stdin a pipe from it; the gateway stops when it is gone.
    """
    upstreams = upstreams or [
        u.strip() for u in os.environ.get("MLXRPC_UPSTREAM", "127.0.0.1:50051").split(",") if u
    ]
    workers = resolve_workers(settings.workers)
    if workers > 1:
        return asyncio.run(_supervise(settings, upstreams, tls, parent_pid))
    return asyncio.run(_serve_one(settings, upstreams, reuse_port, tls, parent_pid))


async def _stop_event(parent_pid: int | None) -> asyncio.Event:
    """Set on SIGTERM/SIGINT, and when the parent process is gone."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if parent_pid is not None:
        if sys.platform.startswith("linux"):
            # Strictly, the kernel signals when the forking *thread* ends: start_sidecars
            # runs on the parent's event-loop thread, which lives as long as the process.
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # it died before the kernel was told to signal us
            stop.set()
        await loop.connect_read_pipe(lambda: _ParentPipe(stop), sys.stdin)
    return stop


class _ParentPipe(asyncio.Protocol):
    """stdin from the parent: nothing is ever written; end of file means it has exited."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._stop.is_set():
            log.warning("the parent process is gone: stopping")
        self._stop.set()


async def _serve_one(settings: Settings, upstreams: list[str], reuse_port: bool,
                     tls: UpstreamTLS | None, parent_pid: int | None) -> int:
    stop = await _stop_event(parent_pid)
    app = create_app(upstreams, settings.max_message_bytes, tls, settings.cors_origin)
    runner, port = await start_app(app, settings.host, settings.http_port,
                                   reuse_port=reuse_port, grace=settings.grace_period)
    print(f"{READY} {port}", flush=True)
    log.info("REST sidecar listening on %s:%d → %s", settings.host, port, ",".join(upstreams))
    await stop.wait()
    await runner.cleanup()
    return 0


async def _supervise(settings: Settings, upstreams: list[str], tls: UpstreamTLS | None,
                     parent_pid: int | None) -> int:
    stop = await _stop_event(parent_pid)
    processes = await start_sidecars(settings, upstreams, tls)
    await stop.wait()
    await stop_sidecars(processes, settings.grace_period)
    return 0
