"""Shared pieces: the benchmark model, a served mlxrpc, and result formatting."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from mlxrpc.demo_model import TextModelSpec, cache_root, ensure_text_model
from mlxrpc.launcher import ServeProcess

# "bench-llama-20m": a real model's shape (GQA, SwiGLU, 8k vocabulary), small
# enough for a 2-core CPU run to finish in minutes. Despite the name it has
# 10.5M parameters (4.2M embedding and untied head, 6.3M in the 8 layers).
BENCH_SPEC = TextModelSpec(
    architecture="llama", hidden_size=256, num_hidden_layers=8, num_attention_heads=8,
    num_key_value_heads=4, intermediate_size=768, vocab_size=8192,
    max_position_embeddings=4096, seed=0,
)


def bench_model() -> Path:
    return ensure_text_model(cache_root() / "models" / "bench-llama-20m", BENCH_SPEC)


class Server(ServeProcess):
    """`mlxrpc serve` of the benchmark model, on loopback."""

    def __init__(self, model: Path, *extra: str) -> None:
        super().__init__("--model", f"bench={model}", "--host", "127.0.0.1", *extra)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def machine() -> str:
    return f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}"
