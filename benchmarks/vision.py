"""Concurrent vision requests: aggregate tokens/s for 1, 4 and 8 streams, each
with its own image, on the locally built tiny Qwen2-VL (continuous batching
through mlx-vlm vs one at a time)."""

from __future__ import annotations

import argparse
import asyncio
import io
import time

import grpc
from PIL import Image

from mlxrpc.demo_model import cache_root
from mlxrpc.demo_vision_model import VisionModelSpec, ensure_vision_model
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, machine


def image(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (112, 112), ((i * 50) % 255, 80, 160)).save(buf, "PNG")
    return buf.getvalue()


def request(i: int, tokens: int) -> pb.GenerateRequest:
    r = pb.GenerateRequest(model="bench")
    m = r.chat.messages.add(role="user")
    m.content.add().image.data = image(i)
    m.content.add(text=f"Describe picture {i}")
    r.stopping.max_tokens, r.stopping.ignore_eos, r.sampling.seed = tokens, True, i
    return r


async def run(port: int, tokens: int, levels: list[int]) -> dict[str, float]:
    results = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        await stub.Generate(request(0, 4))
        for n in levels:
            start = time.perf_counter()
            replies = await asyncio.gather(*(stub.Generate(request(i, tokens)) for i in range(n)))
            results[f"{n} concurrent"] = sum(r.finish.usage.completion_tokens for r in replies) / (
                time.perf_counter() - start)
        start = time.perf_counter()
        total = 0
        for i in range(levels[-1]):
            total += (await stub.Generate(request(i, tokens))).finish.usage.completion_tokens
        results[f"{levels[-1]} one at a time"] = total / (time.perf_counter() - start)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    spec = VisionModelSpec(hidden_size=256, num_hidden_layers=4, intermediate_size=512,
                           vision_embed_dim=64, vision_heads=4, vocab_size=1024)
    model = ensure_vision_model(cache_root() / "models" / "bench-qwen2-vl", spec)
    with Server(model, "--no-http") as server:
        results = asyncio.run(run(server.grpc_port, args.tokens, [1, 4, 8]))
    print(f"# vision requests, {args.tokens} tokens each, one image each ({machine()})\n")
    print("| requests | aggregate tokens/s |\n|---|---|")
    for name, rate in results.items():
        print(f"| {name} | {rate:.1f} |")


if __name__ == "__main__":
    main()
