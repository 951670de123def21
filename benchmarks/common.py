"""Shared pieces: the benchmark model, a served mlxrpc, and result formatting."""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from mlxrpc.demo_model import TextModelSpec, cache_root, ensure_text_model

# A ~20M-parameter llama: a real model's shape (GQA, SwiGLU, 8k vocabulary),
# small enough for a 2-core CPU run to finish in minutes.
BENCH_SPEC = TextModelSpec(
    architecture="llama", hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
    num_key_value_heads=4, intermediate_size=768, vocab_size=8192,
    max_position_embeddings=4096, seed=0,
)


def bench_model() -> Path:
    return ensure_text_model(cache_root() / "models" / "bench-llama-20m", BENCH_SPEC)


class Server:
    """`mlxrpc serve` in a subprocess, ready when it says so."""

    def __init__(self, model: Path, *extra: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mlxrpc", "serve", "--model", f"bench={model}",
             "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", *extra],
            stderr=subprocess.PIPE, text=True,
        )
        self.grpc_port = self.http_port = 0
        ready = threading.Event()
        threading.Thread(target=self._watch, args=(ready,), daemon=True).start()
        if not ready.wait(300) or not self.grpc_port:
            raise RuntimeError("mlxrpc serve did not start")

    def _watch(self, ready: threading.Event) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if m := re.search(r"REST sidecar on port (\d+)", line):
                self.http_port = int(m.group(1))
            if m := re.search(r"ready: gRPC on port (\d+)", line):
                self.grpc_port = int(m.group(1))
                ready.set()
        ready.set()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def machine() -> str:
    return f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}"
