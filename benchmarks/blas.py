"""Prefill time and decode speed with the MLX wheel's bundled BLAS vs the system OpenBLAS (Linux CPU).

The source of the factor quoted by ``mlxrpc serve``'s BLAS log line
(``mlxrpc/blas.py``) and of the prefill (time to first token) and decode
figures in docs/configuration.md. The BLAS must be preloaded before MLX loads,
so each measurement is a fresh process; every round measures both, in
alternating order, and the medians over rounds are reported, which holds up
on a busy machine. Decoding is greedy with the EOS biased away, and the
tokens produced are checked.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from mlxrpc.blas import find_library

from .common import bench_model, machine
from .fair import BIAS, eos_token_ids, median, rotated, versions


def time_child(tokens: int, repeats: int, decode: int) -> dict[str, float]:
    """Median seconds to prefill a ``tokens``-long prompt, and median decode tokens/s."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_logits_processors, make_sampler

    path = bench_model()
    model, tokenizer = mlx_lm.load(str(path))
    prompt = mx.random.randint(0, model.args.vocab_size, (1, tokens), key=mx.random.key(0))
    prefills, rates = [], []
    for _ in range(repeats + 1):  # the first warms up
        start = time.perf_counter()
        # As mlx-lm prefills: the prompt fills the cache, only the last token's logits are computed.
        cache = make_prompt_cache(model)
        model(prompt[:, :-1], cache=cache)
        mx.eval([c.state for c in cache])
        mx.eval(model(prompt[:, -1:], cache=cache))
        prefills.append(time.perf_counter() - start)
    processors = make_logits_processors(logit_bias={i: BIAS for i in eos_token_ids(path)})
    for _ in range(repeats + 1):
        first = None
        n = 0
        for response in mlx_lm.stream_generate(model, tokenizer, prompt[0, :16].tolist(), max_tokens=decode,
                                               sampler=make_sampler(temp=0.0), logits_processors=processors):
            n = response.generation_tokens
            first = first or time.perf_counter()
        if n < decode:
            raise SystemExit(f"decoding stopped at {n} of {decode} tokens")
        rates.append((n - 1) / (time.perf_counter() - first))
    return {"prefill": statistics.median(prefills[1:]), "decode": statistics.median(rates[1:])}


def measure(library: str | None, tokens: int, repeats: int, decode: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if library:
        env["LD_PRELOAD"] = library
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.blas", "--child", "--tokens", str(tokens), "--repeats", str(repeats),
         "--decode", str(decode)],
        env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=512, help="prompt length (default 512)")
    parser.add_argument("--decode", type=int, default=64, help="tokens decoded per timed generation (default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="bundled/OpenBLAS pairs (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="prefills and generations timed per process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(time_child(args.tokens, args.repeats, args.decode)))
        return 0
    library = find_library("auto")
    if library is None:
        print("no system OpenBLAS found (Debian/Ubuntu: apt-get install libopenblas0-pthread)", file=sys.stderr)
        return 1
    bench_model()  # built once, before anything is timed
    print(f"# prefill of {args.tokens} tokens and decode of {args.decode}, bench-llama-20m, float32 "
          f"({machine()}; {versions()}; OpenBLAS: {library})\n")
    print("| round | bundled prefill ms | OpenBLAS prefill ms | prefill speed-up "
          "| bundled decode tok/s | OpenBLAS decode tok/s |\n|---|---|---|---|---|---|")
    runs: dict[str | None, list[dict[str, float]]] = {None: [], library: []}
    for n in range(args.rounds):
        for which in rotated([None, library], n):
            runs[which].append(measure(which, args.tokens, args.repeats, args.decode))
        bundled, openblas = runs[None][-1], runs[library][-1]
        print(f"| {n + 1} | {bundled['prefill'] * 1e3:.0f} | {openblas['prefill'] * 1e3:.0f} "
              f"| {bundled['prefill'] / openblas['prefill']:.1f}× | {bundled['decode']:.1f} "
              f"| {openblas['decode']:.1f} |", flush=True)
    speedups = [b["prefill"] / o["prefill"] for b, o in zip(runs[None], runs[library], strict=True)]
    print(f"\nmedians: prefill {median([r['prefill'] for r in runs[None]]) * 1e3:.0f} ms bundled vs "
          f"{median([r['prefill'] for r in runs[library]]) * 1e3:.0f} ms OpenBLAS "
          f"(speed-up {median(speedups):.1f}×); decode {median([r['decode'] for r in runs[None]]):.1f} vs "
          f"{median([r['decode'] for r in runs[library]]):.1f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
