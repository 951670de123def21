"""Long prompt among running streams: decode stalls and the long prompt's TTFT, against the peers.

A few streams decode; meanwhile a long prompt arrives. A server that prefills
it in chunks with decode steps of the running streams between them stalls
those streams for one chunk at a time instead of the whole prompt. Every
server gets the same chunk size (``--step``): mlxrpc and mlx_lm.server as
``--prefill-step-size``, vllm-mlx (``--continuous-batching``) as
``--chunked-prefill-tokens`` and ``--prefill-step-size``. Measured: the
longest gap between two tokens of the running streams while the long prompt
is prefilled, their steady gap before it arrives, and the long prompt's time
to first token. Over REST SSE for every server (servers.py), fresh server per
round, rotated order.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from tokenizers import Tokenizer

from mlxrpc.blas import find_library
from mlxrpc.demo_model import TextModelSpec, cache_root, ensure_text_model

from .common import BENCH_SPEC, machine
from .fair import eos_bias, median, rotated
from .servers import Served, available, client, describe, kind, start

CHUNK_FLAGS = {"mlxrpc": ["--prefill-step-size"], "mlx_lm.server": ["--prefill-step-size"],
               "vllm-mlx": ["--prefill-step-size", "--chunked-prefill-tokens"]}


def long_model(context: int):
    spec = TextModelSpec(**{**BENCH_SPEC.__dict__, "max_position_embeddings": context})
    return ensure_text_model(cache_root() / "models" / f"bench-llama-20m-{context}", spec)


def long_text(tokenizer: Tokenizer, tokens: int) -> str:
    """About ``tokens`` tokens of varied text (no two chunks alike, nothing a cache already holds)."""
    words = [f"w{(i * 7919) % 5003}" for i in range(tokens)]
    while len(tokenizer.encode(" ".join(words)).ids) > tokens:
        words = words[:int(len(words) * 0.9)]
    return " ".join(words)


async def run(served: Served, long_prompt: str, streams: int, decode_tokens: int,
              bias: dict[str, float]) -> tuple[float, float, float, int, bool]:
    """(long prompt TTFT, longest stall, steady gap, long prompt's tokens, whether streams outlasted the prefill)."""
    async with client() as session:
        running = [asyncio.create_task(served.chat(session, f"Stream {i} says hello.", decode_tokens, bias))
                   for i in range(streams)]
        await asyncio.sleep(1.0)  # the streams are decoding
        arrival = time.perf_counter()
        long = await served.chat(session, long_prompt, 4, bias)
        done = await asyncio.gather(*running)
    prefill_end = arrival + long.ttft
    pairs = [(a, b) for s in done for a, b in zip(s.times, s.times[1:], strict=False)]
    stalls = [b - a for a, b in pairs if b >= arrival and a <= prefill_end]
    steady = [b - a for a, b in pairs if b < arrival]
    outlasted = all(s.times and s.times[-1] >= prefill_end for s in done)
    return long.ttft, max(stalls, default=float("nan")), median(steady), long.prompt_tokens, outlasted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="mlxrpc,vllm-mlx,mlx_lm.server", help="comma-separated server specs")
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--long-tokens", type=int, default=8000, help="the issue's 32k takes ~25 min on 2 cores")
    parser.add_argument("--decode-tokens", type=int, default=300, help="per running stream: must outlast the prefill")
    parser.add_argument("--step", type=int, default=512, help="prefill chunk size, the same for every server")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blas", default="auto", help="auto (system OpenBLAS), bundled or a path; every server")
    args = parser.parse_args()
    specs, skipped = available(args.servers.split(","))
    model = long_model(32768)
    bias, library = eos_bias(model), find_library(args.blas)
    prompt = long_text(Tokenizer.from_file(str(model / "tokenizer.json")), args.long_tokens)
    rows: dict[str, list[tuple]] = {s: [] for s in specs}
    for r in range(args.rounds):
        for spec in rotated(specs, r):
            chunked = " ".join(f"{flag} {args.step}" for flag in CHUNK_FLAGS[kind(spec)])
            with start(f"{spec} {chunked}", model, library, bias, args.streams + 1) as served:
                rows[spec].append(asyncio.run(run(served, prompt, args.streams, args.decode_tokens, bias)))
    print(f"# long prompt (~{args.long_tokens} tokens) among {args.streams} decoding streams, chunks of "
          f"{args.step} tokens, {args.rounds} round(s), medians ({machine()})\n")
    print(describe(specs, library) + "\n")
    print("| server | long prompt tokens | long prompt TTFT s | longest decode stall ms | steady inter-token ms |")
    print("|---|---|---|---|---|")
    for spec, results in rows.items():
        ttft, stall, steady, tokens = (median([x[i] for x in results]) for i in range(4))
        flag = "" if all(x[4] for x in results) else " (streams ended before the prefill: raise --decode-tokens)"
        print(f"| {spec} | {tokens:.0f} | {ttft:.2f} | {stall * 1e3:.0f}{flag} | {steady * 1e3:.0f} |")
    for spec, reason in skipped.items():
        print(f"- {spec} not measured: {reason}")


if __name__ == "__main__":
    main()
