"""``--ranks N``: N local ranks over the ring backend on 127.0.0.1, started by rank 0.

Each follower is this same command in its own process, with MLX_RANK and
MLX_HOSTFILE in its environment (as mlx.launch starts ranks). A follower dies
with rank 0 however rank 0 ends (PR_SET_PDEATHSIG on Linux, as the sidecar
workers do), so no rank is ever orphaned; rank 0 logs a follower's exit, and
its next collective fails, which stops the server.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when its parent ends."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn_local_ranks(count: int) -> list[subprocess.Popen]:
    """Writes a 127.0.0.1 hostfile, starts ranks 1..count-1, and makes this process rank 0.

    Sets MLX_RANK and MLX_HOSTFILE in this process's environment, for the
    ``mx.distributed.init`` that follows.
    """
    hosts = [[f"127.0.0.1:{port}"] for port in _free_ports(count)]
    fd, hostfile = tempfile.mkstemp(prefix="mlxrpc-hosts-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(hosts, f)
    command = [sys.executable, "-m", "mlxrpc", *sys.argv[1:]]
    children = []
    for rank in range(1, count):
        env = {**os.environ, "MLX_RANK": str(rank), "MLX_HOSTFILE": hostfile}
        children.append(subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None))
    os.environ["MLX_RANK"], os.environ["MLX_HOSTFILE"] = "0", hostfile
    for rank, child in enumerate(children, start=1):
        threading.Thread(target=_watch, args=(rank, child), name=f"mlxrpc-rank{rank}-watch",
                         daemon=True).start()
    log.info("started %d local ranks over the ring backend (%s)", count, hostfile)
    return children


def _watch(rank: int, child: subprocess.Popen) -> None:
    code = child.wait()
    if code:
        log.error("rank %d (pid %d) exited with code %d", rank, child.pid, code)


def stop_local_ranks(children: list[subprocess.Popen], timeout: float = 10.0) -> None:
    """Waits for followers that were told to stop; kills those still running after ``timeout``."""
    for child in children:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()
    if hostfile := os.environ.get("MLX_HOSTFILE", ""):
        with contextlib.suppress(OSError):
            os.unlink(hostfile)
