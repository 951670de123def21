"""Quantized KV (--kv-bits): KV bytes, greedy agreement with full precision, decode speed; against the peers.

In-process on the benchmark model (head dim 32, so group size 32): a batch of
streams with prompts of different lengths decodes greedily with the full
precision cache, then with 8- and 4-bit KV. Agreement is the share of tokens
before each stream's first difference from full precision (random weights
have many near-ties, so it understates what trained models keep).

Then the same streams at once against each server, full precision then 8-
and 4-bit KV (group 32), over REST SSE (servers.py): mlxrpc ``--kv-bits``,
mlx_lm.server ``--kv-bits`` (with ``--quantized-kv-start 0``, else it
quantizes only past 5000 tokens; it serves such requests one at a time).
vllm-mlx has no quantization of the running KV: its ``--kv-cache-quantization``
quantizes only the entries stored in its prefix cache. Agreement there is on
the text, against the same server at full precision. ``--blas`` applies to
the servers; the in-process part runs on this process's BLAS (start it with
``LD_PRELOAD`` set to the same library to match).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

import mlx_lm
from tokenizers import Tokenizer

from mlxrpc.blas import find_library
from mlxrpc.engine.batching import ModelBatch
from mlxrpc.engine.kv_cache import KVLayout
from mlxrpc.engine.params import ResolvedSampling

from .common import BENCH_SPEC, machine
from .fair import StreamResult, eos_bias, median, rotated
from .long_context import long_model, long_text
from .servers import Served, available, client, describe, kind, start

KV_FLAGS = {"mlxrpc": "--kv-bits {bits} --kv-group-size 32",
            "mlx_lm.server": "--kv-bits {bits} --kv-group-size 32 --quantized-kv-start 0"}
NO_KV = "no KV quantization (its --kv-cache-quantization quantizes stored prefix-cache entries only)"

GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)


def run(model, kv: KVLayout, prompts: list[list[int]], tokens: int) -> tuple[list[list[int]], int, float]:
    batch = ModelBatch(model, max_num_seqs=len(prompts), prefill_batch_size=len(prompts),
                       prefill_step_size=2048, kv=kv)
    order, out = {}, [[] for _ in prompts]
    for i, p in enumerate(prompts):
        uid, _ = batch.insert(p, max_tokens=tokens, sampling=GREEDY, processors=[], stop_token_ids=[],
                              vocab_size=BENCH_SPEC.vocab_size)
        order[uid] = i
    peak, decode_start = 0, None
    while len(batch):
        _, step = batch.step()
        if decode_start is None and batch.running == len(prompts):
            decode_start, decoded = time.perf_counter(), 0
        peak = max(peak, batch.kv_bytes)
        for t in step:
            out[order[t.uid]].append(t.token)
            decoded = decoded + 1 if decode_start is not None else 0
    return out, peak, decoded / (time.perf_counter() - decode_start)


async def streams(served: Served, prompts: list[str], tokens: int, bias: dict[str, float]) -> list[StreamResult]:
    async with client() as session:
        return list(await asyncio.gather(*(served.chat(session, p, tokens, bias) for p in prompts)))


def decode_rate(results: list[StreamResult]) -> float:
    """All streams: tokens after each one's first, per second from the first first token to the last token.

    A server that serves the streams one at a time (mlx_lm.server with
    --kv-bits) pays the later streams' prefills inside this window.
    """
    first = min(r.times[0] for r in results)
    return sum(r.tokens - 1 for r in results) / (max(r.times[-1] for r in results) - first)


def stream_rate(results: list[StreamResult]) -> float:
    """The median stream's own decode speed, whatever else the server did meanwhile."""
    return median([(r.tokens - 1) / (r.times[-1] - r.times[0]) for r in results])


def agreement(out: list[str], full: list[str]) -> tuple[float, int]:
    """Share of full precision's characters before the first difference, and streams identical."""
    agreed = [next((i for i, (a, b) in enumerate(zip(x, y, strict=False)) if a != b), min(len(x), len(y)))
              for x, y in zip(out, full, strict=True)]
    return sum(agreed) / max(1, sum(len(y) for y in full)), sum(x == y for x, y in zip(out, full, strict=True))


def in_process(args: argparse.Namespace) -> None:
    model = mlx_lm.load(str(long_model(32768)))[0]
    r = random.Random(0)
    prompts = [[r.randrange(100, BENCH_SPEC.vocab_size) for _ in range(args.prompt_tokens - 64 * i)]
               for i in range(args.streams)]
    full, full_bytes, full_speed = run(model, KVLayout(), prompts, args.tokens)
    print(f"# quantized KV: {args.streams} streams, prompts {prompts[-1].__len__()}-{args.prompt_tokens} tokens, "
          f"{args.tokens} greedy tokens ({machine()})\n")
    print(f"## in-process (mlxrpc's ModelBatch), BLAS: {os.environ.get('LD_PRELOAD') or 'bundled with MLX'}\n")
    print("| KV | peak KV bytes | vs full | greedy agreement | streams identical | decode tok/s |")
    print("|---|---|---|---|---|---|")
    print(f"| float32 | {full_bytes} | 100 % | 100 % | {args.streams}/{args.streams} | {full_speed:.0f} |")
    for bits in (8, 4):
        out, nbytes, speed = run(model, KVLayout(bits=bits, group_size=32), prompts, args.tokens)
        agreed = [next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), len(x))
                  for x, y in zip(out, full, strict=True)]
        same = sum(a == args.tokens for a in agreed)
        print(f"| {bits}-bit (group 32) | {nbytes} | {100 * nbytes / full_bytes:.0f} % | "
              f"{100 * sum(agreed) / (args.tokens * len(out)):.0f} % | {same}/{len(out)} | {speed:.0f} |", flush=True)


def against_servers(args: argparse.Namespace) -> None:
    kinds, skipped = available(args.servers.split(","))
    path = long_model(32768)
    bias, library = eos_bias(path), find_library(args.blas)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    prompts = [f"Stream {i}. " + long_text(tokenizer, args.prompt_tokens - 64 * i) for i in range(args.streams)]
    specs = [k if bits is None else f"{k} {KV_FLAGS[k].format(bits=bits)}"
             for k in kinds if k in KV_FLAGS for bits in (None, 8, 4)]
    rows: dict[str, list[list[StreamResult]]] = {s: [] for s in specs}
    for r in range(args.rounds):
        for spec in rotated(specs, r):
            with start(spec, path, library, bias, args.streams) as served:
                rows[spec].append(asyncio.run(streams(served, prompts, args.tokens, bias)))
    print(f"\n## against the servers: the same {args.streams} streams at once, {args.rounds} round(s), medians\n")
    print(describe(kinds, library) + "\n")
    print("| server | KV | decode tok/s, all streams | vs full precision | per-stream tok/s | greedy agreement "
          "(text) | streams identical | tokens produced / asked |\n|---|---|---|---|---|---|---|---|")
    for k in kinds:
        if k not in KV_FLAGS:
            print(f"| {k} | 8-bit, 4-bit | {NO_KV} | | | | | |")
            continue
        full = rows[k]
        full_rate = median([decode_rate(x) for x in full])
        for spec, label in zip([s for s in specs if kind(s) == k], ("full precision", "8-bit", "4-bit"), strict=True):
            rate, own = median([decode_rate(x) for x in rows[spec]]), median([stream_rate(x) for x in rows[spec]])
            share, same = agreement([s.text for s in rows[spec][0]], [s.text for s in full[0]])
            produced = sum(s.tokens for x in rows[spec] for s in x)
            print(f"| {k} | {label} | {rate:.0f} | {rate / full_rate:.2f} | {own:.0f} | {100 * share:.0f} % | "
                  f"{same}/{args.streams} | {produced}/{args.tokens * args.streams * args.rounds} |")
    for spec, reason in skipped.items():
        print(f"- {spec} not measured: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--servers", default="mlxrpc,mlx_lm.server,vllm-mlx",
                        help="comma-separated server kinds ('' for the in-process table only)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blas", default="auto", help="auto (system OpenBLAS), bundled or a path; every server")
    args = parser.parse_args()
    in_process(args)
    if args.servers:
        against_servers(args)


if __name__ == "__main__":
    main()
