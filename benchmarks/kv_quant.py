"""Quantized KV (--kv-bits): KV bytes, greedy agreement with full precision, decode speed.

In-process on the benchmark model (head dim 32, so group size 32): a batch of
streams with prompts of different lengths decodes greedily with the full
precision cache, then with 8- and 4-bit KV. Agreement is the share of tokens
before each stream's first difference from full precision (random weights
have many near-ties, so it understates what trained models keep).
"""

from __future__ import annotations

import argparse
import random
import time

import mlx_lm

from mlxrpc.engine.batching import ModelBatch
from mlxrpc.engine.kv_cache import KVLayout
from mlxrpc.engine.params import ResolvedSampling

from .common import BENCH_SPEC, machine
from .long_context import long_model

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    args = parser.parse_args()
    model = mlx_lm.load(str(long_model(32768)))[0]
    r = random.Random(0)
    prompts = [[r.randrange(100, BENCH_SPEC.vocab_size) for _ in range(args.prompt_tokens - 64 * i)]
               for i in range(args.streams)]
    full, full_bytes, full_speed = run(model, KVLayout(), prompts, args.tokens)
    print(f"# quantized KV: {args.streams} streams, prompts {prompts[-1].__len__()}-{args.prompt_tokens} tokens, "
          f"{args.tokens} greedy tokens ({machine()})\n")
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


if __name__ == "__main__":
    main()
