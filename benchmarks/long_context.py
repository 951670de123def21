"""Long prompt among running streams: decode stalls and the long prompt's TTFT.

A few streams decode; meanwhile a long prompt arrives. mlx-lm's BatchGenerator
already prefills in chunks of ``--prefill-step-size`` tokens and runs one
decode step of the running streams between chunks, so the running streams
stall for one chunk at a time instead of the whole prompt. This measures the
longest gap between two tokens of the running streams while the long prompt
is prefilled, and the long prompt's time to first token, for each chunk size.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc

from mlxrpc.demo_model import TextModelSpec, cache_root, ensure_text_model
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import BENCH_SPEC, Server, machine


def long_model(context: int):
    spec = TextModelSpec(**{**BENCH_SPEC.__dict__, "max_position_embeddings": context})
    return ensure_text_model(cache_root() / "models" / f"bench-llama-20m-{context}", spec)


async def stream(stub: pb_grpc.InferenceStub, prompt: str | list[int],
                 max_tokens: int) -> tuple[float, list[float]]:
    """(time to first token, token arrival times) of one greedy stream (text or token ids)."""
    r = pb.GenerateRequest(model="bench")
    if isinstance(prompt, str):
        r.text = prompt
    else:
        r.token_ids.ids.extend(prompt)
    r.stopping.max_tokens, r.stopping.ignore_eos, r.sampling.temperature = max_tokens, True, 0.0
    start = time.perf_counter()
    times = []
    async for message in stub.StreamGenerate(r):
        times.extend([time.perf_counter()] * len(message.token_ids))
    return times[0] - start, times


async def run(port: int, streams: int, long_tokens: int, decode_tokens: int) -> tuple[float, float, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        await stream(stub, "warm up", 4)
        running = [asyncio.create_task(stream(stub, f"Stream {i} says hello.", decode_tokens))
                   for i in range(streams)]
        await asyncio.sleep(1.0)  # the streams are decoding
        arrival = time.perf_counter()
        ttft, _ = await stream(stub, [(i * 7919) % 8000 + 100 for i in range(long_tokens)], 4)
        done = await asyncio.gather(*running)
    prefill_end = arrival + ttft
    gaps = [b - a for _, times in done for a, b in zip(times, times[1:], strict=False)
            if b >= arrival and a <= prefill_end]
    steady = [b - a for _, times in done for a, b in zip(times, times[1:], strict=False) if b < arrival]
    return ttft, max(gaps, default=float("nan")), (sorted(steady)[len(steady) // 2] if steady else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--long-tokens", type=int, default=3500)
    parser.add_argument("--decode-tokens", type=int, default=400)
    parser.add_argument("--steps", default="2048,512,256", help="prefill step sizes to compare")
    parser.add_argument("--blas", default="bundled")
    args = parser.parse_args()
    model = long_model(max(4096, args.long_tokens + 512))
    print(f"# long prompt ({args.long_tokens} tokens) among {args.streams} decoding streams, "
          f"BLAS {args.blas} ({machine()})\n")
    print("| --prefill-step-size | long prompt TTFT s | longest decode stall ms | steady inter-token ms |")
    print("|---|---|---|---|")
    for step in (int(s) for s in args.steps.split(",")):
        with Server(model, "--blas", args.blas, "--prefill-step-size", str(step)) as server:
            ttft, stall, steady = asyncio.run(run(server.grpc_port, args.streams, args.long_tokens,
                                                  args.decode_tokens))
        print(f"| {step} | {ttft:.2f} | {stall * 1e3:.0f} | {steady * 1e3:.0f} |", flush=True)


if __name__ == "__main__":
    main()
