"""One stream: in-process mlx_lm.stream_generate vs gRPC StreamGenerate vs REST SSE.

Prints tokens/s and time to first token for each, and the ratios against the
in-process baseline on the same model and BLAS. Like for like (fair.py): all
three decode the same prompts greedily with the same EOS bias and no
``ignore_eos``, every run's produced tokens are counted (a short one is
flagged), and each round starts the baseline process and the server afresh,
in alternating order; the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import aiohttp
import grpc

from mlxrpc.blas import find_library
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, bench_model, machine
from .fair import eos_bias, median, rotated, versions

# Each run starts with its own number, so no run reuses another's prefix cache.
PROMPT = "{run}. Once upon a time, in a land far away, there lived a small model that"
Measured = tuple[float, float, list[int]]  # median tokens/s, median TTFT s, tokens produced per run


def in_process(model_path: str, tokens: int, runs: int, bias: dict[str, float]) -> Measured:
    import mlx_lm
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    model, tokenizer = mlx_lm.load(model_path)
    sampler = make_sampler(temp=0.0)
    processors = make_logits_processors(logit_bias={int(k): v for k, v in bias.items()} or None)
    rates, ttfts, counts = [], [], []
    for run in range(runs + 1):  # the first run warms up
        start = time.perf_counter()
        first = None
        n = 0
        for response in mlx_lm.stream_generate(model, tokenizer, PROMPT.format(run=run), max_tokens=tokens,
                                               sampler=sampler, logits_processors=processors):
            n = response.generation_tokens
            first = first or time.perf_counter()
        end = time.perf_counter()
        rates.append((n - 1) / (end - first))
        ttfts.append(first - start)
        counts.append(n)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:]), counts[1:]


def grpc_request(run: int, tokens: int, bias: dict[str, float]) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="bench", text=PROMPT.format(run=run))
    request.stopping.max_tokens, request.sampling.temperature = tokens, 0.0
    for token, value in bias.items():
        request.sampling.logit_bias[int(token)] = value
    return request


async def over_grpc(port: int, tokens: int, runs: int, bias: dict[str, float]) -> tuple[Measured, float]:
    """The measurement, and the median client TTFT minus the engine's own TTFT."""
    rates, ttfts, transport, counts = [], [], [], []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.InferenceStub(channel)
        for run in range(runs + 1):
            start = time.perf_counter()
            first = None
            n = 0
            async for message in stub.StreamGenerate(grpc_request(run, tokens, bias)):
                n += len(message.token_ids)
                first = first or time.perf_counter()
                if message.HasField("finish"):
                    engine_ttft = message.finish.timings.time_to_first_token_seconds
            end = time.perf_counter()
            rates.append((n - 1) / (end - first))
            ttfts.append(first - start)
            transport.append(first - start - engine_ttft)
            counts.append(n)
    return (statistics.median(rates[1:]), statistics.median(ttfts[1:]), counts[1:]), statistics.median(transport[1:])


async def over_sse(port: int, tokens: int, runs: int, bias: dict[str, float]) -> Measured:
    rates, ttfts, counts = [], [], []
    async with aiohttp.ClientSession() as session:
        for run in range(runs + 1):
            body = {"model": "bench", "prompt": PROMPT.format(run=1000 + run), "max_tokens": tokens,
                    "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
            if bias:
                body["logit_bias"] = bias
            start = time.perf_counter()
            first = None
            n = 0
            async with session.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                r.raise_for_status()
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
            counts.append(n)
    return statistics.median(rates[1:]), statistics.median(ttfts[1:]), counts[1:]


def baseline(tokens: int, runs: int, library: str | None, bias: bool) -> Measured:
    """In-process stream_generate in a fresh process with ``library`` preloaded (None: the bundled BLAS)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if library:
        env["LD_PRELOAD"] = library
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.single_stream", "--baseline-only", "--tokens", str(tokens),
         "--runs", str(runs), *([] if bias else ["--no-bias"])],
        env=env, capture_output=True, text=True, check=True).stdout
    rate, ttft, counts = json.loads(out.strip().splitlines()[-1])
    return rate, ttft, counts


def served(model, blas: str, tokens: int, runs: int, bias: dict[str, float]) -> tuple[Measured, float, Measured]:
    """gRPC (with its transport share of TTFT) and SSE from one fresh server."""
    with Server(model, "--blas", blas) as server:
        grpc_measured, transport = asyncio.run(over_grpc(server.grpc_port, tokens, runs, bias))
        sse_measured = asyncio.run(over_sse(server.http_port, tokens, runs, bias))
    return grpc_measured, transport, sse_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3, help="timed requests per process (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/server pairs, alternating (median reported)")
    parser.add_argument("--blas", choices=["both", "bundled", "openblas"], default="both")
    parser.add_argument("--no-bias", action="store_true", help="no EOS bias: runs may end early (counted, flagged)")
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = bench_model()
    bias = {} if args.no_bias else eos_bias(model)
    if args.baseline_only:
        print(json.dumps(in_process(str(model), args.tokens, args.runs, bias)))
        return
    print(f"# single stream, {args.tokens} tokens, {args.rounds} rounds x median of {args.runs} "
          f"({machine()}; {versions()})\n")
    print(f"Every path: the same prompts, greedy, logit_bias {json.dumps(bias)}, no ignore_eos.\n")
    print("| path | tokens/s (min–max over rounds) | ratio | TTFT ms | vs in-process ms | transport ms "
          "| tokens produced / asked |")
    print("|---|---|---|---|---|---|---|")
    openblas = find_library("auto")
    configs = []
    if args.blas in ("both", "bundled"):
        configs.append(("bundled BLAS", None, "bundled"))
    if args.blas in ("both", "openblas") and openblas:
        configs.append(("OpenBLAS", openblas, "auto"))
    for label, library, blas in configs:
        rounds: dict[str, list[Measured]] = {"in-process": [], "gRPC": [], "SSE": []}
        transports: list[float] = []
        for r in range(args.rounds):
            for side in rotated(["in-process", "server"], r):
                if side == "in-process":
                    rounds["in-process"].append(baseline(args.tokens, args.runs, library, bool(bias)))
                else:
                    grpc_measured, transport, sse_measured = served(model, blas, args.tokens, args.runs, bias)
                    rounds["gRPC"].append(grpc_measured)
                    rounds["SSE"].append(sse_measured)
                    transports.append(transport)
        base_rate = median([m[0] for m in rounds["in-process"]])
        base_ttft = median([m[1] for m in rounds["in-process"]])
        names = {"in-process": f"in-process mlx_lm.stream_generate, {label}",
                 "gRPC": f"gRPC StreamGenerate, {label}", "SSE": f"REST SSE (sidecar → gRPC), {label}"}
        grpc_ttft = median([m[1] for m in rounds["gRPC"]])
        for key, measured in rounds.items():
            rates = [m[0] for m in measured]
            ttft = median([m[1] for m in measured])
            counts = [n for m in measured for n in m[2]]
            short = [n for n in counts if n < args.tokens]
            flag = f" **short: {sorted(short)}**" if short else ""
            if key == "in-process":
                extra = "- | -"
            else:
                transport = median(transports) + (ttft - grpc_ttft if key == "SSE" else 0.0)
                extra = f"{(ttft - base_ttft) * 1e3:+.1f} | {transport * 1e3:.1f}"
            print(f"| {names[key]} | {median(rates):.1f} ({min(rates):.1f}–{max(rates):.1f}) "
                  f"| {median(rates) / base_rate:.3f} | {ttft * 1e3:.1f} | {extra} "
                  f"| {sum(counts)}/{args.tokens * len(counts)}{flag} |")
    print("\ntransport ms: client-observed TTFT minus the engine's own TTFT (Finish.timings); "
          "for SSE, plus the SSE-vs-gRPC TTFT difference.")


if __name__ == "__main__":
    main()
