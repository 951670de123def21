"""Shared prefixes: clients arriving together with one long system prompt, against the peers.

Each client sends the same system prompt and its own question at the same
moment, to a fresh server: mlxrpc with and without --use-paged-cache,
vllm-mlx --continuous-batching --use-paged-cache and mlx_lm.server by
default, every one allowed to prefill all clients at once. Reported: the
first wave's time to first token (p50, p95), its wall time, and the prompt
tokens actually prefilled (prompt minus cached, summed; "-" where the server
does not report cached tokens). Over REST SSE for every server (servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tokenizers import Tokenizer

from mlxrpc.blas import find_library

from .agent_replay import system_prompt
from .common import machine, percentile
from .fair import StreamResult, eos_bias, median, rotated
from .long_context import long_model
from .servers import Served, available, client, describe, kind, start

SERVERS = "mlxrpc,mlxrpc --use-paged-cache,vllm-mlx --use-paged-cache,mlx_lm.server"
PREFILL_FLAGS = {"mlxrpc": "--prefill-batch-size", "mlx_lm.server": "--prompt-concurrency",
                 "vllm-mlx": "--prefill-batch-size"}


async def wave(served: Served, system: str, clients: int, bias: dict[str, float]) -> tuple[list[StreamResult], float]:
    async with client() as session:
        begin = time.perf_counter()
        results = await asyncio.gather(*(
            served.chat(session, [("system", system), ("user", f"Client {i}: what is the first step?")], 8, bias)
            for i in range(clients)))
    return list(results), time.perf_counter() - begin


def prefilled(results: list[StreamResult]) -> str:
    if any(r.cached_tokens is None for r in results):
        return "-"
    return str(sum(r.prompt_tokens - r.cached_tokens for r in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default=SERVERS, help="comma-separated server specs")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--system-tokens", type=int, default=2000, help="the issue's 4000 takes ~10 min on 2 cores")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blas", default="auto", help="auto (system OpenBLAS), bundled or a path; every server")
    args = parser.parse_args()
    specs, skipped = available(args.servers.split(","))
    model = long_model(32768)
    bias, library = eos_bias(model), find_library(args.blas)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.system_tokens)
    rows: dict[str, list[tuple[list[StreamResult], float]]] = {s: [] for s in specs}
    for r in range(args.rounds):
        for spec in rotated(specs, r):
            with start(f"{spec} {PREFILL_FLAGS[kind(spec)]} {args.clients}", model, library, bias,
                       args.clients) as served:
                rows[spec].append(asyncio.run(wave(served, system, args.clients, bias)))
    print(f"# shared prefix: {args.clients} clients at once, ~{args.system_tokens}-token system prompt, "
          f"{args.rounds} round(s), medians ({machine()})\n")
    print(describe(specs, library) + "\n")
    print("| server | prompt tokens | TTFT p50 s | TTFT p95 s | wave s | prefilled tokens |")
    print("|---|---|---|---|---|---|")
    for spec, waves in rows.items():
        p50 = median([percentile([s.ttft for s in w], 50) for w, _ in waves])
        p95 = median([percentile([s.ttft for s in w], 95) for w, _ in waves])
        prompt = median([s.prompt_tokens for w, _ in waves for s in w])
        print(f"| {spec} | {prompt:.0f} | {p50:.1f} | {p95:.1f} | {median([t for _, t in waves]):.1f} "
              f"| {' / '.join(prefilled(w) for w, _ in waves)} |")
    for spec, reason in skipped.items():
        print(f"- {spec} not measured: {reason}")


if __name__ == "__main__":
    main()
