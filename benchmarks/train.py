"""Trains the benchmark target (the 20M llama) and a small draft on the Python
standard library's own sources, so speculative decoding has something to accept.

Random weights accept nothing worth measuring. Both models share the
benchmark tokenizer (built by ``mlxrpc.demo_model``), train for a fixed number
of steps each on the same token stream (this interpreter's ``Lib/*.py``,
5% held out), and are cached under ``~/.cache/mlxrpc/models/trained-*`` like
the demo model: a rerun with the same settings loads them. Prints the
held-out loss of each and the greedy acceptance of the draft against the
target on held-out code (``--num-draft-tokens`` drafts per step).

    python -m benchmarks.train                        # the full run: 300 steps of 4x128 tokens each
    python -m benchmarks.train --steps 3 --batch 2 --length 64 --corpus-bytes 300000  # a smoke run

Measured on the shared 2-core box (load ~10, the wheel's reference BLAS): a
20M step of 2x64 tokens takes ~5 s, so the full run needs OpenBLAS
(``--blas``/LD_PRELOAD, ~25x faster matmuls) or a quiet machine to fit in
minutes; the 2M draft is ~5x faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sysconfig
import time
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlxrpc.demo_model import IM_END, TextModelSpec, build_text_model, cache_root, ensure_built

from .common import BENCH_SPEC

# A ~2M-parameter draft with the target's vocabulary (same tokenizer build).
DRAFT_SPEC = dataclasses.replace(BENCH_SPEC, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, intermediate_size=384, seed=1)


def corpus(model_dir: Path, max_bytes: int) -> np.ndarray:
    """Token ids of the standard library's sources (sorted paths, first ``max_bytes``),
    each file ended by the end-of-turn token."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    eos = tokenizer.token_to_id(IM_END)
    root = Path(sysconfig.get_paths()["stdlib"])
    texts, size = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    ids = [t.ids for t in tokenizer.encode_batch(texts)]
    return np.concatenate([np.asarray(i + [eos], dtype=np.int32) for i in ids])


def batches(tokens: np.ndarray, batch: int, length: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    while True:
        starts = rng.integers(0, len(tokens) - length - 1, size=batch)
        window = np.stack([tokens[s:s + length + 1] for s in starts])
        yield mx.array(window[:, :-1]), mx.array(window[:, 1:])


def loss_fn(model: nn.Module, inputs: mx.array, targets: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(inputs), targets, reduction="mean")


def evaluate(model: nn.Module, tokens: np.ndarray, length: int, windows: int = 8) -> float:
    starts = np.linspace(0, len(tokens) - length - 2, windows).astype(int)
    window = np.stack([tokens[s:s + length + 1] for s in starts])
    return float(loss_fn(model, mx.array(window[:, :-1]), mx.array(window[:, 1:])).item())


def train(path: Path, train_tokens: np.ndarray, args: argparse.Namespace) -> None:
    """Trains the model in ``path`` in place (weights rewritten)."""
    import mlx_lm

    model, _ = mlx_lm.load(str(path))
    optimizer = optim.AdamW(learning_rate=optim.cosine_decay(args.lr, max(args.steps, 1), args.lr / 10))
    step_fn = nn.value_and_grad(model, loss_fn)
    data = batches(train_tokens, args.batch, args.length, seed=0)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss, grads = step_fn(model, *next(data))
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state, loss)
        if step == 1 or step % 50 == 0 or step == args.steps:
            print(f"  {path.name}: step {step}/{args.steps} loss {loss.item():.3f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})


def ensure_trained(name: str, spec: TextModelSpec, tokens: np.ndarray, args: argparse.Namespace) -> Path:
    settings = {"steps": args.steps, "batch": args.batch, "length": args.length, "lr": args.lr,
                "corpus_bytes": args.corpus_bytes, "tokens": int(len(tokens))}
    fingerprint = json.dumps({"spec": spec.fingerprint(), "train": settings}, sort_keys=True)
    dest = cache_root() / "models" / f"trained-{name}"
    if args.no_cache and (dest / "mlxrpc-spec.json").exists():
        (dest / "mlxrpc-spec.json").unlink()

    def build(path: Path) -> None:
        build_text_model(path, spec)
        train(path, tokens, args)
        (path / "training.json").write_text(json.dumps(settings, indent=2))

    return ensure_built(dest, fingerprint, build)


def acceptance(target: Path, draft: Path, held_out: np.ndarray, args: argparse.Namespace) -> float:
    """Share of greedy drafts the target accepts, decoding held-out code prompts."""
    import mlx_lm

    from benchmarks.speculative import GREEDY
    from mlxrpc.engine.batching import ModelBatch
    from mlxrpc.engine.speculative import Speculation, make_speculator

    t_model, d_model = mlx_lm.load(str(target))[0], mlx_lm.load(str(draft))[0]
    # A fixed draft length: the raw acceptance rate.
    spec = Speculation(method="draft", draft_model=str(draft), num_draft_tokens=args.num_draft_tokens,
                       adaptive=False)
    speculator = make_speculator(spec, d_model)
    assert speculator is not None
    batch = ModelBatch(t_model, max_num_seqs=1, prefill_batch_size=1, prefill_step_size=512,
                       speculator=speculator)
    for s in np.linspace(0, len(held_out) - 200, args.prompts).astype(int):
        batch.insert(held_out[s:s + 128].tolist(), max_tokens=args.tokens, sampling=GREEDY,
                     processors=[], stop_token_ids=[], vocab_size=BENCH_SPEC.vocab_size)
        while len(batch):
            _, out = batch.step()
            batch.remove([t.uid for t in out if t.finish_reason])
    stats = speculator.stats
    return stats.accepted / stats.proposed if stats.proposed else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=128, help="tokens per training sequence")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--corpus-bytes", type=int, default=8 << 20)
    parser.add_argument("--num-draft-tokens", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=4, help="held-out prompts for the acceptance rate")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per acceptance prompt")
    parser.add_argument("--no-cache", action="store_true", help="retrain even if a cached build matches")
    args = parser.parse_args()

    from .common import bench_model

    tokens = corpus(bench_model(), args.corpus_bytes)
    split = int(len(tokens) * 0.95)
    train_tokens, held_out = tokens[:split], tokens[split:]
    print(f"corpus: {len(tokens)} tokens ({len(held_out)} held out)", flush=True)
    result: dict[str, Any] = {"steps": args.steps, "batch": args.batch, "length": args.length}
    paths = {}
    for name, spec in (("target-20m", BENCH_SPEC), ("draft-2m", DRAFT_SPEC)):
        start = time.perf_counter()
        paths[name] = ensure_trained(name, spec, train_tokens, args)
        import mlx_lm

        model = mlx_lm.load(str(paths[name]))[0]
        result[name] = {"path": str(paths[name]), "held_out_loss": round(evaluate(model, held_out, args.length), 3),
                        "seconds": round(time.perf_counter() - start, 1)}
    result["draft_acceptance"] = round(acceptance(paths["target-20m"], paths["draft-2m"], held_out, args), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
