"""Prefix cache on disk: one long agent prompt, cold vs after a server restart, against the peers.

Each server answers the prompt on a fresh start (cold), is stopped, started
again on the same disk state and answers it again; then once more, restarted
again, it answers the same system prompt with the next question (what an
agent's new session sends). The second form matters for vllm-mlx 0.6: its
entries hold the prompt and the answer, and a prompt that is a prefix of an
entry (the very same request again) is prefilled in full by design
(``scheduler.py``: "drop the cache and prefill"). mlxrpc keeps its prefix
cache in ``--prompt-cache-dir``; vllm-mlx saves its own under
~/.cache/vllm-mlx at shutdown and loads it at start (a HOME kept across the
restart, servers.disk_tier); mlx_lm.server has no disk tier, so it is cold
again. Cached tokens are the server's own usage figure ("-" where it reports
none); the bytes on disk show what the first server left. Over REST SSE for
every server (servers.py).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from mlxrpc.blas import find_library

from .agent_replay import system_prompt
from .common import machine
from .fair import StreamResult, eos_bias, median, rotated
from .long_context import long_model
from .servers import available, cached, client, describe, disk_tier, start


def disk_bytes(folder: str) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="mlxrpc,vllm-mlx,mlx_lm.server", help="comma-separated server specs")
    parser.add_argument("--prompt-tokens", type=int, default=8000, help="the issue's 12000 takes ~10 min on 2 cores")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blas", default="auto", help="auto (system OpenBLAS), bundled or a path; every server")
    args = parser.parse_args()
    specs, skipped = available(args.servers.split(","))
    model = long_model(32768)
    bias, library = eos_bias(model), find_library(args.blas)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.prompt_tokens)
    questions = ["Start with the failing test.", "Now list the files you changed."]

    async def ask(served, question: str) -> StreamResult:
        async with client() as session:
            return await served.chat(session, [("system", system), ("user", question)], 4, bias)

    rows: dict[str, list[tuple[StreamResult, int, StreamResult, StreamResult]]] = {s: [] for s in specs}
    for r in range(args.rounds):
        for spec in rotated(specs, r):
            with tempfile.TemporaryDirectory(prefix="mlxrpc-disk-") as folder:
                tiered, home = disk_tier(spec, folder)
                answers, saved = [], 0
                for i, question in enumerate([questions[0], *questions]):  # cold, the same again, the next one
                    with start(tiered, model, library, bias, home=home) as served:
                        answers.append(asyncio.run(ask(served, question)))
                    if i == 0:
                        saved = disk_bytes(folder)  # what the first server left
                rows[spec].append((answers[0], saved, *answers[1:]))
    print(f"# prefix cache on disk: ~{args.prompt_tokens}-token agent prompt, cold vs after a restart, "
          f"{args.rounds} round(s), medians ({machine()})\n")
    print(describe(specs, library) + "\n")
    print("| server | prompt tokens | cold TTFT s | bytes on disk | after restart, same prompt: cached, TTFT s, "
          "speed-up | after restart, next question: cached, TTFT s, speed-up |\n|---|---|---|---|---|---|")
    for spec, runs in rows.items():
        cold = median([run[0].ttft for run in runs])
        cells = []
        for k in (2, 3):
            warm = median([run[k].ttft for run in runs])
            cells.append(f"{' / '.join(cached(run[k].cached_tokens) for run in runs)}, {warm:.2f}, {cold / warm:.1f}x")
        print(f"| {spec} | {runs[0][0].prompt_tokens} | {cold:.2f} | {median([run[1] for run in runs]):.0f} "
              f"| {' | '.join(cells)} |")
    for spec, reason in skipped.items():
        print(f"- {spec} not measured: {reason}")


if __name__ == "__main__":
    main()
