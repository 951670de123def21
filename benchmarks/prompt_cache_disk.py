"""Prefix cache on disk: one long agent prompt, cold vs after a server restart.

The first server prefills the prompt (cold) and writes its KV to
``--prompt-cache-dir``; a second server on the same folder answers the same
prompt from the disk entry.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile

from tokenizers import Tokenizer

from .agent_replay import system_prompt, turn
from .common import Server, machine
from .long_context import long_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=12000)
    parser.add_argument("--blas", default="bundled")
    args = parser.parse_args()
    model = long_model(32768)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.prompt_tokens)
    messages = [("system", system), ("user", "Start with the failing test.")]
    folder = tempfile.mkdtemp(prefix="mlxrpc-disk-")
    rows = []
    for label in ("cold", "after restart"):
        with Server(model, "--blas", args.blas, "--prompt-cache-dir", folder) as server:
            rows.append((label, *asyncio.run(turn(server.grpc_port, messages, 4))))
    print(f"# prefix cache on disk, BLAS {args.blas} ({machine()})\n")
    print("| request | prompt tokens | cached tokens | TTFT s |\n|---|---|---|---|")
    for label, ttft, _, prompt, cached in rows:
        print(f"| {label} | {prompt} | {cached} | {ttft:.2f} |")
    print(f"\nspeed-up of time to first token after a restart: {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
    main()
