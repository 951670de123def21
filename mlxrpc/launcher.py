"""``mlxrpc serve`` in a child process, for integration tests and benchmarks.

Starts the server on free ports (port 0) and reads its log until it says it
is ready, so callers learn the bound gRPC and HTTP ports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

READY = re.compile(r"ready: gRPC on port (\d+)")
SIDECAR = re.compile(r"REST sidecar on port (\d+)")


class ServeProcess:
    """A running ``mlxrpc serve``; ``log`` keeps its stderr lines."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlxrpc", "serve", "--grpc-port", "0", "--http-port", "0", *args],
            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
        )
        self.log: list[str] = []
        self.grpc_port = self.http_port = 0
        ready = threading.Event()
        threading.Thread(target=self._read_log, args=(ready,), daemon=True).start()
        if not ready.wait(timeout) or not self.grpc_port:
            self.process.kill()
            raise RuntimeError("mlxrpc serve did not become ready:\n" + "".join(self.log))

    def _read_log(self, ready: threading.Event) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if m := SIDECAR.search(line):
                self.http_port = int(m.group(1))
            if m := READY.search(line):
                self.grpc_port = int(m.group(1))
                ready.set()
        ready.set()

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a graceful drain) and the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
