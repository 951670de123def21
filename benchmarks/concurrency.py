"""Concurrency sweep: N simultaneous streams, aggregate tokens/s and TTFT p50/p95.

mlxrpc (over gRPC and over REST SSE) against mlx_lm.server with its batching on
(--decode-concurrency), the peer users would otherwise run, on the same model
in the same run. Ratios are mlxrpc REST / mlx_lm.server (same protocol).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import grpc

from mlxrpc.blas import find_library
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine, percentile

PROMPT = "Write a short story about a robot who learns to paint. Number {i}."


async def sse_stream(session: aiohttp.ClientSession, url: str, i: int, tokens: int,
                     extra: dict) -> tuple[float, int]:
    body = {"model": "bench", **extra, "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
            "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    ttft = None
    n = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                n = chunk["usage"]["completion_tokens"]
    return ttft or float("nan"), n


async def grpc_stream(stub: pb_grpc.InferenceStub, i: int, tokens: int) -> tuple[float, int]:
    request = pb.GenerateRequest(model="bench")
    request.chat.messages.add(role="user").content.add(text=PROMPT.format(i=i))
    request.stopping.max_tokens, request.sampling.temperature = tokens, 0.0
    request.stopping.ignore_eos = True
    start = time.perf_counter()
    ttft = None
    n = 0
    async for message in stub.StreamGenerate(request):
        if ttft is None and message.text:
            ttft = time.perf_counter() - start
        n += len(message.token_ids)
    return ttft or float("nan"), n


async def sweep_sse(url: str, levels: list[int], tokens: int, extra: dict) -> dict[int, tuple]:
    results = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600),
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        for n in levels:  # the same prompts once first, so every server warms its caches alike
            await asyncio.gather(*(sse_stream(session, url, i, 4, extra) for i in range(n)))
        for n in levels:
            start = time.perf_counter()
            done = await asyncio.gather(*(sse_stream(session, url, i, tokens, extra) for i in range(n)))
            results[n] = _summary(done, time.perf_counter() - start)
    return results


async def sweep_grpc(port: int, levels: list[int], tokens: int) -> dict[int, tuple]:
    results = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        for n in levels:
            await asyncio.gather(*(grpc_stream(stub, i, 4) for i in range(n)))
        for n in levels:
            start = time.perf_counter()
            done = await asyncio.gather(*(grpc_stream(stub, i, tokens) for i in range(n)))
            results[n] = _summary(done, time.perf_counter() - start)
    return results


def _summary(done: list[tuple[float, int]], wall: float) -> tuple[float, float, float]:
    ttfts = [t for t, _ in done]
    return sum(n for _, n in done) / wall, percentile(ttfts, 50), percentile(ttfts, 95)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlx_lm_server(model: str, concurrency: int, blas: str | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **({"LD_PRELOAD": blas} if blas else {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "mlx_lm", "server", "--model", model, "--port", str(port),
         "--decode-concurrency", str(concurrency), "--prompt-concurrency", "8",
         "--log-level", "WARNING"], stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, base
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("mlx_lm.server did not start")


def table(title: str, rows: dict[str, dict[int, tuple]], levels: list[int], baseline: str) -> str:
    out = [f"## {title}", "", "| server | streams | tokens/s | vs " + baseline + " | TTFT p50 ms | TTFT p95 ms |",
           "|---|---|---|---|---|---|"]
    for name, results in rows.items():
        for n in levels:
            rate, p50, p95 = results[n]
            ratio = rate / rows[baseline][n][0]
            out.append(f"| {name} | {n} | {rate:.1f} | {ratio:.2f} | {p50*1e3:.0f} | {p95*1e3:.0f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--skip-peer", action="store_true", help="do not run mlx_lm.server")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = bench_model()
    rows: dict[str, dict[int, tuple]] = {}
    openblas = find_library("auto")
    blases = [("bundled BLAS", None, "bundled")] + ([("OpenBLAS", openblas, openblas)] if openblas else [])
    for label, preload, flag in blases:
        if not args.skip_peer:
            process, base = mlx_lm_server(str(model), max(levels), preload)
            try:
                rows[f"mlx_lm.server REST, {label}"] = asyncio.run(sweep_sse(
                    f"{base}/v1/chat/completions", levels, args.tokens, {"model": str(model)}))
            finally:
                process.terminate()
                process.wait(30)
        with Server(model, "--max-num-seqs", str(max(levels)), "--blas", flag) as server:
            rows[f"mlxrpc gRPC, {label}"] = asyncio.run(sweep_grpc(server.grpc_port, levels, args.tokens))
        with Server(model, "--max-num-seqs", str(max(levels)), "--blas", flag) as server:
            rows[f"mlxrpc REST, {label}"] = asyncio.run(sweep_sse(
                f"http://127.0.0.1:{server.http_port}/v1/chat/completions", levels, args.tokens,
                {"ignore_eos": True}))
    print(f"# concurrency sweep, {args.tokens} tokens per stream ({machine()})\n")
    for label, _, _ in blases:
        subset = {k: v for k, v in rows.items() if k.endswith(label)}
        baseline = f"mlx_lm.server REST, {label}" if not args.skip_peer else f"mlxrpc gRPC, {label}"
        print(table(f"aggregate throughput, {label}", subset, levels, baseline) + "\n")


if __name__ == "__main__":
    main()
