"""Cost of grammar-constrained decoding: tokens/s with a JSON schema vs without.

Alone and in a batch of 8, on the same model and server in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine

SCHEMA = {"type": "object", "properties": {"notes": {"type": "array", "items": {"type": "string"}}},
          "required": ["notes"]}


def request(i: int, tokens: int, constrained: bool) -> pb.GenerateRequest:
    r = pb.GenerateRequest(model="bench")
    r.chat.messages.add(role="user").content.add(text=f"Write notes, take {i}")
    r.stopping.max_tokens, r.sampling.temperature, r.sampling.seed = tokens, 1.0, i
    if constrained:
        r.response_format.json_schema.schema_json = json.dumps(SCHEMA)
    else:
        r.stopping.ignore_eos = True
    return r


async def measure(stub: pb_grpc.InferenceStub, n: int, tokens: int, constrained: bool) -> float:
    start = time.perf_counter()
    replies = await asyncio.gather(*(stub.Generate(request(i, tokens, constrained)) for i in range(n)))
    return sum(r.finish.usage.completion_tokens for r in replies) / (time.perf_counter() - start)


async def run(port: int, tokens: int) -> dict[tuple[int, bool], float]:
    results = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        await measure(stub, 8, 8, True)  # warm up both paths
        await measure(stub, 8, 8, False)
        for n in (1, 8):
            for constrained in (False, True):
                results[(n, constrained)] = await measure(stub, n, tokens, constrained)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    with Server(bench_model()) as server:
        results = asyncio.run(run(server.grpc_port, args.tokens))
    print(f"# structured output cost ({machine()})\n")
    print("| streams | free tokens/s | JSON-schema tokens/s | ratio |\n|---|---|---|---|")
    for n in (1, 8):
        free, constrained = results[(n, False)], results[(n, True)]
        print(f"| {n} | {free:.1f} | {constrained:.1f} | {constrained / free:.2f} |")


if __name__ == "__main__":
    main()
