"""Shared prefixes: clients arriving together with one long system prompt.

Each client sends the same system prompt and its own question at the same
moment, to a fresh server, with and without --use-paged-cache. Reported: the
first wave's time to first token (p50, p95), its wall time, and the prompt
tokens actually prefilled (prompt minus cached, summed).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tokenizers import Tokenizer

from .agent_replay import system_prompt, turn
from .common import Server, machine, percentile
from .long_context import long_model


async def wave(port: int, system: str, clients: int) -> list[tuple[float, float, int, int]]:
    return list(await asyncio.gather(*(
        turn(port, [("system", system), ("user", f"Client {i}: what is the first step?")], 8)
        for i in range(clients))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--system-tokens", type=int, default=4000)
    parser.add_argument("--blas", default="bundled")
    args = parser.parse_args()
    model = long_model(32768)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.system_tokens)
    print(f"# shared prefix: {args.clients} clients at once, ~{args.system_tokens}-token system prompt, "
          f"BLAS {args.blas} ({machine()})\n")
    print("| server | TTFT p50 s | TTFT p95 s | wave s | prefilled tokens |\n|---|---|---|---|---|")
    for label, flags in (("mlxrpc", []), ("mlxrpc --use-paged-cache", ["--use-paged-cache"])):
        with Server(model, "--blas", args.blas, "--prefill-batch-size", str(args.clients),
                    "--max-num-seqs", str(args.clients), *flags) as server:
            start = time.perf_counter()
            results = asyncio.run(wave(server.grpc_port, system, args.clients))
            took = time.perf_counter() - start
        ttfts = [r[0] for r in results]
        prefilled = sum(prompt - cached for _, _, prompt, cached in results)
        print(f"| {label} | {percentile(ttfts, 50):.1f} | {percentile(ttfts, 95):.1f} | {took:.1f} | "
              f"{prefilled} |", flush=True)


if __name__ == "__main__":
    main()
