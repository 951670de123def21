"""Prefix cache: time to first token with a long system prompt, cold vs seen before.

Cold requests use a system prompt nobody sent before; warm ones reuse a
system prompt from an earlier request (different user question).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine

SYSTEM = "Policy {n}: you are a careful assistant. Answer in one sentence, cite nothing, " * 12


def request(system: str, question: str) -> pb.GenerateRequest:
    r = pb.GenerateRequest(model="bench")
    r.chat.messages.add(role="system").content.add(text=system)
    r.chat.messages.add(role="user").content.add(text=question)
    r.stopping.max_tokens, r.sampling.temperature = 4, 0.0
    return r


async def ttft(stub: pb_grpc.InferenceStub, r: pb.GenerateRequest) -> tuple[float, int, int]:
    start = time.perf_counter()
    first = None
    async for message in stub.StreamGenerate(r):
        if message.token_ids and first is None:
            first = time.perf_counter() - start
        if message.HasField("finish"):
            usage = message.finish.usage
    return first, usage.prompt_tokens, usage.cached_tokens


async def run(port: int, runs: int) -> tuple[list, list]:
    cold, warm = [], []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        await ttft(stub, request(SYSTEM.format(n="warmup"), "hi"))
        for i in range(runs):
            system = SYSTEM.format(n=i)
            cold.append(await ttft(stub, request(system, "What is MLX?")))
            warm.append(await ttft(stub, request(system, "And what is gRPC?")))
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blas", default="bundled")
    args = parser.parse_args()
    with Server(bench_model(), "--blas", args.blas) as server:
        cold, warm = asyncio.run(run(server.grpc_port, args.runs))
    c, w = statistics.median(t for t, _, _ in cold), statistics.median(t for t, _, _ in warm)
    print(f"# prefix cache, median of {args.runs}, BLAS {args.blas} ({machine()})\n")
    print("| request | prompt tokens | cached tokens | TTFT ms |\n|---|---|---|---|")
    print(f"| cold system prompt | {cold[0][1]} | {cold[0][2]} | {c * 1e3:.0f} |")
    print(f"| seen system prompt | {warm[0][1]} | {warm[0][2]} | {w * 1e3:.0f} |")
    print(f"\nspeed-up of time to first token: {c / w:.1f}x")


if __name__ == "__main__":
    main()
