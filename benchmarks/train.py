"""Trained benchmark models: the "20M" target (10.5M parameters) and a 2.5M draft, on the stdlib's sources.

Random weights accept no draft token, so speculative decoding needs models
that have learnt something. The corpus is available offline everywhere: this
interpreter's own ``.py`` files (the last 5 % by path held out). Both models
share one byte-level BPE trained on the same corpus (a draft must use the
target's tokenizer exactly), ChatML specials included; each trains for a fixed
time budget with AdamW on next-token loss, and is cached like the demo model
(rebuilt only when the spec, the budget or the corpus changes). Training runs
with the system OpenBLAS preloaded when there is one (``--blas auto``): with
the MLX wheel's reference BLAS one step of the target took 15-20 s on a
shared 2-core CPU and learns next to nothing in the budget.

Prints each model's held-out loss and the draft's greedy acceptance rate: the
share of positions along the target's own greedy continuation where the
draft's top token equals the target's (what a greedy verifier accepts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from mlxrpc.blas import find_library
from mlxrpc.demo_model import BOS, CHAT_TEMPLATE, IM_END, SPECIAL_TOKENS, cache_root, ensure_built

from .common import BENCH_SPEC, machine
from .fair import versions

DRAFT_SPEC = replace(BENCH_SPEC, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, intermediate_size=384, seed=1)


@dataclass(frozen=True)
class Budget:
    seconds: float = 480.0
    batch: int = 8
    context: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    corpus_bytes: int = 8 << 20


def preload_blas(choice: str) -> str | None:
    """The preloaded OpenBLAS, re-executing this script with it first if needed (as ``mlxrpc serve`` does)."""
    library = find_library(choice)
    if library is None or library in os.environ.get("LD_PRELOAD", "").split(":"):
        return library
    env = {**os.environ, "LD_PRELOAD": ":".join(p for p in (library, os.environ.get("LD_PRELOAD")) if p)}
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.train", *sys.argv[1:]], env)


def progress(message: str) -> None:
    print(f"<!-- {time.strftime('%H:%M:%S')} {message} -->", file=sys.stderr, flush=True)


def corpus_files(limit: int) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) from the standard library, in a fixed order, up to ``limit`` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts and "test" not in p.parts)
    chosen, total = [], 0
    for path in files:
        total += path.stat().st_size
        if total > limit:
            break
        chosen.append(path)
    cut = int(len(chosen) * 0.95)
    return chosen[:cut], chosen[cut:]


def read(files: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]


def corpus_digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:16]


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def write_model(dest: Path, spec, tok, weights: dict) -> None:
    import mlx.core as mx

    dest.mkdir(parents=True, exist_ok=True)
    tok.save(str(dest / "tokenizer.json"))
    (dest / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": IM_END, "pad_token": BOS,
        "add_bos_token": False, "model_max_length": spec.max_position_embeddings,
        "chat_template": CHAT_TEMPLATE}, indent=2))
    (dest / "config.json").write_text(json.dumps(model_config(spec, tok), indent=2))
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata={"format": "mlx"})


def model_config(spec, tok) -> dict:
    return {
        "model_type": spec.architecture, "hidden_size": spec.hidden_size,
        "num_hidden_layers": spec.num_hidden_layers, "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads, "intermediate_size": spec.intermediate_size,
        "vocab_size": tok.get_vocab_size(), "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "head_dim": spec.hidden_size // spec.num_attention_heads, "bos_token_id": tok.token_to_id(BOS),
        "eos_token_id": tok.token_to_id(IM_END), "torch_dtype": spec.dtype,
    }


def train(spec, tok, train_ids, held_ids, budget: Budget) -> tuple[dict, list[tuple[int, float]], int, float]:
    """(weights, [(step, training loss)], steps, held-out loss) after ``budget.seconds`` of AdamW."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    mx.random.seed(spec.seed)
    model = llama.Model(llama.ModelArgs.from_dict(model_config(spec, tok)))
    schedule = optim.join_schedules([optim.linear_schedule(1e-5, budget.learning_rate, budget.warmup_steps),
                                     optim.cosine_decay(budget.learning_rate, 5000, 1e-4)], [budget.warmup_steps])
    optimizer = optim.AdamW(learning_rate=schedule, weight_decay=0.01)

    def loss_fn(model, x, y):
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step_fn(x, y):  # compiled: fuses the step's elementwise work, a large share on the CPU
        loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y)
        optimizer.update(model, grads)
        return loss

    def batch(ids: mx.array, key: mx.array) -> tuple[mx.array, mx.array]:
        starts = mx.random.randint(0, ids.size - budget.context - 1, (budget.batch,), key=key)
        rows = mx.stack([ids[s:s + budget.context + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    log, step, start = [], 0, time.perf_counter()
    key = mx.random.key(spec.seed)
    while time.perf_counter() - start < budget.seconds:
        key, sub = mx.random.split(key)
        loss = step_fn(*batch(train_ids, sub))
        mx.eval(state, loss)
        step += 1
        if step % 25 == 1:
            log.append((step, loss.item()))
    held = [loss_fn(model, *batch(held_ids, mx.random.key(1000 + i))).item() for i in range(4)]
    return dict(tree_flatten(model.parameters())), log, step, sum(held) / len(held)


def acceptance(target_dir: Path, draft_dir: Path, prompts: list[list[int]], tokens: int) -> tuple[float, float, float]:
    """(share of the target's greedy tokens the draft predicts top-1 at the same position,
    share of distinct tokens in those continuations, top-1 agreement on the held-out text itself).

    A small model's greedy continuation falls into loops, which a draft predicts
    easily; the distinct share shows how much, and the agreement on real text is
    the figure a trained checkpoint's speculation would see."""
    import mlx.core as mx
    import mlx_lm

    target, _ = mlx_lm.load(str(target_dir))
    draft, _ = mlx_lm.load(str(draft_dir))
    hits = total = distinct = text_hits = text_total = 0
    for prompt in prompts:
        ids = list(prompt)
        for _ in range(tokens):  # the target's greedy continuation (no cache: short and simple)
            ids.append(int(mx.argmax(target(mx.array([ids]))[0, -1]).item()))
        x = mx.array([ids[:-1]])
        agree = mx.argmax(target(x)[0], -1) == mx.argmax(draft(x)[0], -1)
        hits += int(agree[len(prompt) - 1:].sum().item())
        total += tokens
        distinct += len(set(ids[len(prompt):]))
        text = mx.array([prompt])
        text_hits += int((mx.argmax(target(text)[0], -1) == mx.argmax(draft(text)[0], -1)).sum().item())
        text_total += len(prompt)
    return hits / total, distinct / total, text_hits / text_total


def build(budget: Budget, vocab_size: int) -> tuple[Path, Path, dict]:
    """Trains (or finds cached) the target and draft; returns their folders and the training report."""
    import mlx.core as mx

    train_files, held_files = corpus_files(budget.corpus_bytes)
    fingerprint = json.dumps({"target": asdict(BENCH_SPEC), "draft": asdict(DRAFT_SPEC), "budget": asdict(budget),
                              "vocab": vocab_size, "corpus": corpus_digest(train_files + held_files)},
                             sort_keys=True)
    root = cache_root() / "models" / "bench-trained"
    report: dict = {}

    def make(dest: Path) -> None:
        texts, held = read(train_files), read(held_files)
        tok = train_tokenizer(texts, vocab_size)
        progress(f"tokenizer trained on {len(texts)} files")
        train_ids = mx.array([i for t in texts for i in tok.encode(t).ids], dtype=mx.uint32)
        held_ids = mx.array([i for t in held for i in tok.encode(t).ids], dtype=mx.uint32)
        report["corpus"] = {"files": len(train_files), "held_out_files": len(held_files),
                            "train_tokens": train_ids.size, "held_out_tokens": held_ids.size}
        for name, spec in (("target", BENCH_SPEC), ("draft", DRAFT_SPEC)):
            weights, log, steps, held_loss = train(spec, tok, train_ids, held_ids, budget)
            progress(f"{name}: {steps} steps, held-out loss {held_loss:.2f}")
            write_model(dest / name, spec, tok, weights)
            report[name] = {"steps": steps, "loss_log": log, "held_out_loss": held_loss}
        (dest / "report.json").write_text(json.dumps(report, indent=2))

    ensure_built(root, fingerprint, make)
    return root / "target", root / "draft", json.loads((root / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=Budget.seconds, help="training time per model")
    parser.add_argument("--corpus-mb", type=float, default=Budget.corpus_bytes / (1 << 20))
    parser.add_argument("--vocab", type=int, default=BENCH_SPEC.vocab_size)
    parser.add_argument("--blas", choices=["auto", "bundled"], default="auto",
                        help="auto: preload the system OpenBLAS when there is one (re-executes this script)")
    parser.add_argument("--accept-tokens", type=int, default=32, help="greedy tokens per acceptance prompt")
    args = parser.parse_args()
    blas = preload_blas(args.blas)
    budget = Budget(seconds=args.seconds, corpus_bytes=int(args.corpus_mb * (1 << 20)))
    started = time.perf_counter()
    target, draft, report = build(budget, args.vocab)
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(target)
    held = read(corpus_files(budget.corpus_bytes)[1])
    prompts = [tok.encode(text[:400]) for text in held[:8] if len(text) > 400]
    rate, distinct, agreement = acceptance(target, draft, prompts, args.accept_tokens)
    print(f"# trained benchmark models ({machine()}; {versions()}; BLAS: {blas or 'bundled'})\n")
    print(f"Corpus: {report['corpus']}; {budget.seconds:.0f} s of training each; "
          f"{time.perf_counter() - started:.0f} s this run (0 when cached).\n")
    print("| model | folder | steps | first / last logged training loss | held-out loss |\n|---|---|---|---|---|")
    for name, folder in (("target (10.5M)", target), ("draft", draft)):
        r = report[name.split()[0]]
        first, last = r["loss_log"][0][1], r["loss_log"][-1][1]
        print(f"| {name} | {folder} | {r['steps']} | {first:.2f} / {last:.2f} | {r['held_out_loss']:.2f} |")
    print(f"\nGreedy acceptance of the draft along the target's continuation: {rate:.1%} "
          f"({len(prompts)} held-out prompts × {args.accept_tokens} tokens; {distinct:.0%} of those tokens "
          f"distinct). Top-1 agreement of draft and target on the held-out prompts' own text: {agreement:.1%}.")


if __name__ == "__main__":
    main()
