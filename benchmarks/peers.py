"""The peer servers benchmarks compare against: mlx_lm.server and vllm-mlx, on loopback.

mlx_lm.server runs from this environment. vllm-mlx 0.6 requires mlx-lm<0.32
and pulls in heavy dependencies (torchvision, gradio, opencv) that its
``serve`` command never imports, so it lives in a venv of its own, made by
``python -m benchmarks.peers install`` (``make bench-peers``): vllm-mlx without
its dependencies, then only what ``vllm-mlx serve`` imports, mlx-lm 0.31, and
this environment's MLX version and backend (the same BLAS as everyone else).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from mlxrpc.demo_model import cache_root

VLLM_MLX = "vllm-mlx==0.6.0"
# Read from vllm_mlx/cli.py's serve_command and server.py, and checked by starting
# it: the rest of its requirements serve the Gradio chat, vision and audio.
VLLM_MLX_SERVE_DEPS = ["mlx-lm>=0.31.3,<0.32", "fastapi", "uvicorn", "psutil", "jsonschema", "requests",
                       "python-multipart"]
INSTALL_HINT = "make bench-peers (python -m benchmarks.peers install)"


def vllm_mlx_venv() -> Path:
    return cache_root() / "peers" / "vllm-mlx"


def _mlx_requirement() -> str:
    """This environment's MLX, backend included, so every server runs the same MLX."""
    version = metadata.version("mlx")
    if sys.platform != "linux":
        return f"mlx=={version}"
    for backend, extra in (("mlx-cuda-13", "cuda13"), ("mlx-cuda-12", "cuda12")):
        try:
            metadata.version(backend)
            return f"mlx[{extra}]=={version}"
        except metadata.PackageNotFoundError:
            pass
    return f"mlx[cpu]=={version}"


def install_vllm_mlx() -> Path:
    """Creates (or completes) vllm-mlx's venv; returns it."""
    venv = vllm_mlx_venv()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", VLLM_MLX], check=True)
    subprocess.run([*pip, _mlx_requirement(), *VLLM_MLX_SERVE_DEPS], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-c", "import vllm_mlx.server"], check=True)
    (venv / "mlxrpc-peer-ready").touch()
    return venv


def vllm_mlx_missing() -> str | None:
    """Why vllm-mlx cannot be benchmarked here, or None."""
    if not (vllm_mlx_venv() / "mlxrpc-peer-ready").exists():
        return f"not installed: {INSTALL_HINT}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerServer:
    """A peer's OpenAI-compatible server; ready once ``/v1/models`` answers.

    ``model`` is the name requests use. Its output goes to a temporary file, so
    a failed start reports the peer's own error. ``own_home`` gives it an empty
    HOME, removed at stop, for peers that keep state under ~; a path instead
    gives it that HOME, kept, so its state outlives a restart.
    """

    def __init__(self, name: str, command: list[str], port: int, model: str, preload: str | None,
                 own_home: bool | str = False, timeout: float = 300) -> None:
        self.name, self.model, self.base = name, model, f"http://127.0.0.1:{port}"
        self.home = tempfile.TemporaryDirectory(prefix="mlxrpc-peer-home-") if own_home is True else None
        merged = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        if own_home:
            merged["HOME"] = self.home.name if self.home else str(own_home)
        if preload:
            merged["LD_PRELOAD"] = preload
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop)
        self.process = subprocess.Popen(command, stdout=self.output, stderr=subprocess.STDOUT, env=merged)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start (exit code {self.process.returncode}):\n{self.tail()}")
            time.sleep(0.5)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/v1/models", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def tail(self, lines: int = 15) -> str:
        self.output.seek(0)
        return "\n".join(self.output.read().decode(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output.close()
        if self.home:
            self.home.cleanup()

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mlx_lm_server(model: Path, concurrency: int, preload: str | None, extra: Sequence[str] = (),
                  home: str | None = None) -> PeerServer:
    """mlx_lm.server with its batching on: the peer users would otherwise run (``home``: unused, no disk state)."""
    port = free_port()
    return PeerServer("mlx_lm.server", [
        sys.executable, "-m", "mlx_lm", "server", "--model", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--decode-concurrency", str(concurrency), "--prompt-concurrency", "8",
        "--log-level", "WARNING", *extra], port, str(model), preload)


def vllm_mlx_server(model: Path, concurrency: int, preload: str | None, extra: Sequence[str] = (),
                    home: str | None = None) -> PeerServer:
    """``vllm-mlx serve --continuous-batching`` from its own venv.

    Its own HOME: vllm-mlx saves its prefix cache under ~/.cache/vllm-mlx at
    shutdown and loads it at start, which would warm one run with another's
    prompts; a ``home`` kept across starts is how a benchmark measures that.
    """
    port = free_port()
    return PeerServer("vllm-mlx", [
        str(vllm_mlx_venv() / "bin" / "vllm-mlx"), "serve", str(model), "--host", "127.0.0.1",
        "--port", str(port), "--continuous-batching", "--completion-batch-size", str(concurrency),
        "--offline", *extra], port, str(model), preload, own_home=home or True)


def main() -> int:
    if sys.argv[1:] != ["install"]:
        print("usage: python -m benchmarks.peers install", file=sys.stderr)
        return 2
    print(f"vllm-mlx ready in {install_vllm_mlx()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
