"""Single stream with and without speculation, in-process through the engine's batch.

An edit-this-file prompt (a standard-library source file and an instruction to
rewrite it) decoded greedily by ``ModelBatch`` -- the engine's own decode
path -- plain and with prompt lookup (or a draft model, ``--draft-model``),
alternating, one stream. Prints tokens/s, the speed-up, drafts proposed and
accepted, what one forward pass over k+1 tokens costs against one token, and
with a draft model what one draft token costs (together they bound the gain:
a step that verifies k drafts costs that ratio plus k draft tokens and emits
1 + accepted tokens).

Random weights rarely copy the file the way a trained model does; the
acceptance printed is the measured one for the model given (--model).
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import textwrap
import time
from typing import Any

import mlx.core as mx

from mlxrpc.engine.batching import ModelBatch
from mlxrpc.engine.params import ResolvedSampling
from mlxrpc.engine.speculative import Speculation, make_speculator

from .common import bench_model, machine

GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)


def edit_prompt(tokenizer: Any, lines: int) -> list[int]:
    import string

    source = "\n".join(inspect.getsource(string).splitlines()[:lines])
    text = (f"Rename the variable `s` to `text` in this file and print the whole file:\n\n"
            f"```python\n{source}\n```\n\nThe whole file, edited:\n\n```python\n")
    return tokenizer.encode(text)


def decode(model: Any, prompt: list[int], tokens: int, spec: Speculation | None,
           draft: Any = None) -> tuple[float, int, int]:
    """(tokens/s after the first token, drafts proposed, drafts accepted)."""
    batch = ModelBatch(model, max_num_seqs=1, prefill_batch_size=1, prefill_step_size=2048,
                       speculator=make_speculator(spec, draft))
    batch.insert(prompt, max_tokens=tokens, sampling=GREEDY, processors=[], stop_token_ids=[],
                 vocab_size=model.args.vocab_size)
    n, first = 0, None
    while len(batch):
        _, out = batch.step()
        n += len(out)
        if out and first is None:
            first, n = time.perf_counter(), n - 1
        batch.remove([t.uid for t in out if t.finish_reason])
    rate = n / (time.perf_counter() - first) if first else 0.0
    stats = batch.speculator.stats if batch.speculator else None
    return rate, stats.proposed if stats else 0, stats.accepted if stats else 0


def forward_cost(model: Any, context: int, width: int, repeats: int = 10) -> float:
    """Seconds of one forward pass of ``width`` tokens after ``context`` cached ones."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    mx.eval(model(mx.zeros((1, context), dtype=mx.int32), cache=cache))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(model(mx.zeros((1, width), dtype=mx.int32), cache=cache))
        times.append(time.perf_counter() - start)
        for c in cache:
            c.trim(width)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model path (default: the 20M benchmark llama)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--lines", type=int, default=40, help="lines of the file to edit")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--ngram-size", type=int, default=3)
    parser.add_argument("--draft-model", default=None, help="speculate with this draft model instead of prompt lookup")
    args = parser.parse_args()

    import mlx_lm

    model, tokenizer = mlx_lm.load(str(args.model or bench_model()))
    draft = mlx_lm.load(args.draft_model)[0] if args.draft_model else None
    method = "draft" if draft is not None else "ngram"
    prompt = edit_prompt(tokenizer, args.lines)
    spec = Speculation(method=method, num_draft_tokens=args.num_draft_tokens, ngram_size=args.ngram_size,
                       max_batch=1)
    decode(model, prompt, 8, None)  # warm-up
    decode(model, prompt, 8, spec, draft)
    plain, lookup, proposed, accepted = [], [], 0, 0
    for _ in range(args.runs):  # alternating
        plain.append(decode(model, prompt, args.tokens, None)[0])
        rate, p, a = decode(model, prompt, args.tokens, spec, draft)
        lookup.append(rate)
        proposed, accepted = proposed + p, accepted + a
    one = forward_cost(model, len(prompt), 1)
    wide = forward_cost(model, len(prompt), args.num_draft_tokens + 1)
    result = {
        "machine": machine(), "method": method, "prompt_tokens": len(prompt), "tokens": args.tokens,
        "runs": args.runs, "plain_tok_s": round(statistics.median(plain), 1),
        f"{method}_tok_s": round(statistics.median(lookup), 1),
        "speedup": round(statistics.median(lookup) / statistics.median(plain), 2),
        "drafts_proposed": proposed, "drafts_accepted": accepted,
        "acceptance": round(accepted / proposed, 3) if proposed else 0.0,
        f"forward_{args.num_draft_tokens + 1}_vs_1_tokens": round(wide / one, 2),
    }
    if draft is not None:
        result["draft_token_vs_target_token"] = round(forward_cost(draft, len(prompt), 1) / one, 2)
    print(textwrap.indent(json.dumps(result, indent=2), ""))


if __name__ == "__main__":
    main()
