"""One stream: in-process mlx_lm.stream_generate vs gRPC StreamGenerate vs REST SSE.

Prints tokens/s and time to first token for each, and the ratios against the
in-process baseline measured in the same run on the same model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine

PROMPT = "Once upon a time, in a land far away, there lived a small model that"


def in_process(model_path: str, tokens: int, runs: int) -> tuple[float, float]:
    import mlx_lm
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = mlx_lm.load(model_path)
    sampler = make_sampler(temp=0.0)
    rates, ttfts = [], []
    for _ in range(runs + 1):  # the first run warms up
        start = time.perf_counter()
        first = None
        n = 0
        for response in mlx_lm.stream_generate(model, tokenizer, PROMPT, max_tokens=tokens,
                                               sampler=sampler):
            n = response.generation_tokens
            first = first or time.perf_counter()
        end = time.perf_counter()
        rates.append((n - 1) / (end - first))
        ttfts.append(first - start)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:])


async def over_grpc(port: int, tokens: int, runs: int) -> tuple[float, float]:
    request = pb.GenerateRequest(model="bench", text=PROMPT)
    request.stopping.max_tokens, request.stopping.ignore_eos = tokens, True
    request.sampling.temperature = 0.0
    rates, ttfts = [], []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        for _ in range(runs + 1):
            start = time.perf_counter()
            first = None
            n = 0
            async for message in stub.StreamGenerate(request):
                n += len(message.token_ids)
                first = first or time.perf_counter()
            end = time.perf_counter()
            rates.append((n - 1) / (end - first))
            ttfts.append(first - start)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:])


async def over_sse(port: int, tokens: int, runs: int) -> tuple[float, float]:
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    rates, ttfts = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(runs + 1):
            start = time.perf_counter()
            first = None
            n = 0
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                async for line in r.content:
                    if not line.startswith(b"data: {"):
                        continue
                    first = first or time.perf_counter()
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        n = chunk["usage"]["completion_tokens"]
            end = time.perf_counter()
            rates.append((n - 1) / (end - first))
            ttfts.append(first - start)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    model = bench_model()
    base_rate, base_ttft = in_process(str(model), args.tokens, args.runs)
    with Server(model) as server:
        grpc_rate, grpc_ttft = asyncio.run(over_grpc(server.grpc_port, args.tokens, args.runs))
        sse_rate, sse_ttft = asyncio.run(over_sse(server.http_port, args.tokens, args.runs))
    print(f"# single stream, {args.tokens} tokens, median of {args.runs} ({machine()})")
    print("| path | tokens/s | ratio | TTFT ms | added TTFT ms |")
    print("|---|---|---|---|---|")
    print(f"| in-process mlx_lm.stream_generate | {base_rate:.1f} | 1.00 | {base_ttft*1e3:.1f} | - |")
    for name, rate, ttft in (("gRPC StreamGenerate", grpc_rate, grpc_ttft),
                             ("REST SSE (sidecar → gRPC)", sse_rate, sse_ttft)):
        print(f"| {name} | {rate:.1f} | {rate/base_rate:.3f} | {ttft*1e3:.1f} | "
              f"{(ttft-base_ttft)*1e3:+.1f} |")


if __name__ == "__main__":
    main()
