"""The first requests after start-up: are they as fast as the later ones?

Each server is started afresh, answers ``--requests`` single-stream requests one
after the other (different prompts of about the same length, the fair body of
benchmarks/fair.py), and is stopped; the servers alternate over ``--rounds``.
Reported per request number: time to first token and decode tokens/s, medians
over rounds. A server that warms its shapes at load answers request 1 as fast
as request 10.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp

from mlxrpc.blas import find_library

from .common import Server, bench_model, machine
from .concurrency import PEERS
from .fair import StreamResult, eos_bias, median, request_body, rotated, versions
from .servers import sse_stream

PROMPT = "Request {i}: write a short story about a robot who learns to paint, in plain words."


async def requests(url: str, model: str, count: int, tokens: int, bias: dict[str, float]) -> list[StreamResult]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        return [await sse_stream(session, url, request_body(model, PROMPT.format(i=i), tokens, bias))
                for i in range(count)]


def measure(name: str, model: Path, preload: str | None, blas: str, count: int, tokens: int,
            bias: dict[str, float]) -> list[StreamResult]:
    if name in PEERS:
        with PEERS[name](model, 1, preload) as peer:
            return asyncio.run(requests(f"{peer.base}/v1/chat/completions", peer.model, count, tokens, bias))
    with Server(model, "--blas", blas) as server:
        return asyncio.run(requests(f"http://127.0.0.1:{server.http_port}/v1/chat/completions", "bench",
                                    count, tokens, bias))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", default="mlxrpc REST,mlx_lm.server REST")
    parser.add_argument("--blas", choices=["bundled", "openblas"], default="bundled")
    args = parser.parse_args()
    model = bench_model()
    bias = eos_bias(model)
    preload = find_library("auto") if args.blas == "openblas" else None
    flag = preload or "bundled"
    names = args.servers.split(",")
    runs: dict[str, list[list[StreamResult]]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in rotated(names, r):
            runs[name].append(measure(name, model, preload, flag, args.requests, args.tokens, bias))
            print(f"<!-- round {r + 1}: {name} done -->", file=sys.stderr, flush=True)
    print(f"# first requests after start-up: {args.requests} sequential requests of {args.tokens} tokens per "
          f"start, {args.rounds} starts per server, BLAS {args.blas} ({machine()})\n")
    for name in names:
        print(f"- {name}: {versions()}")
    print("\n| request | " + " | ".join(f"{n} TTFT ms | {n} decode tok/s" for n in names) + " |")
    print("|---|" + "---|---|" * len(names))
    for i in range(args.requests):
        cells = []
        for name in names:
            results = [run[i] for run in runs[name]]
            cells.append(f"{median([s.ttft for s in results]) * 1e3:.0f}")
            cells.append(f"{median([s.decode_rate for s in results]):.1f}")
        print(f"| {i + 1} | " + " | ".join(cells) + " |")
    short = [(name, r, i) for name in names for r, run in enumerate(runs[name]) for i, s in enumerate(run)
             if s.tokens < args.tokens]
    for name, r, i in short:
        print(f"- SHORT: {name}, round {r + 1}, request {i + 1}")


if __name__ == "__main__":
    main()
