"""Agent-session replay: an 8-turn coding-agent conversation with a long system prompt.

The shape follows what agent CLIs send (Claude Code, Codex, OpenCode): a
10–20k-token system prompt carrying the rules and the JSON schemas of a dozen
tools, then turns of user task → assistant tool call → tool result, the
whole history resent each turn. The content is synthetic (no private data).
Each turn reports its time to first token, total time and the prompt tokens
served from cache, for mlxrpc, vllm-mlx and mlx_lm.server on the same model
and BLAS, over REST SSE (servers.py). With ``--restart-after N`` each server
is restarted after turn N on its disk tier (servers.disk_tier; mlx_lm.server
has none): the next turn shows what survives a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from tokenizers import Tokenizer

from mlxrpc.blas import find_library

from .common import machine
from .fair import StreamResult, eos_bias, median, rotated
from .long_context import long_model
from .servers import Served, available, cached, client, describe, disk_tier, start

TOOLS = ["read_file", "write_file", "edit_file", "run_shell", "grep", "glob", "list_dir", "web_fetch",
         "web_search", "todo_write", "task", "notebook_edit"]

RULES = ("You are an interactive coding agent working in the user's repository. Be concise. "
         "Never invent file contents: read them first. Prefer editing existing files to creating new "
         "ones. Run the tests after each change and report failures verbatim. ")

TURNS = [
    ("The test tests/test_parser.py::test_empty fails. Find out why.", "grep",
     {"pattern": "def parse", "path": "src/"}, "src/parser.py:12: def parse(text: str) -> Node:"),
    (None, "read_file", {"path": "src/parser.py"},
     "def parse(text: str) -> Node:\n    tokens = lex(text)\n    return Node(tokens[0])\n" * 20),
    (None, "run_shell", {"command": "pytest -q tests/test_parser.py -k empty"},
     "E   IndexError: list index out of range\n1 failed in 0.12s"),
    (None, "edit_file", {"path": "src/parser.py", "old": "Node(tokens[0])",
                         "new": "Node(tokens[0]) if tokens else Node.empty()"}, "Edited src/parser.py."),
    (None, "run_shell", {"command": "pytest -q tests/test_parser.py"}, "12 passed in 0.31s"),
    ("Now add a changelog entry for the fix.", "read_file", {"path": "CHANGELOG.md"},
     "# Changelog\n\n## 1.4.0\n- Faster lexing.\n" * 10),
    (None, "edit_file", {"path": "CHANGELOG.md", "old": "# Changelog\n",
                         "new": "# Changelog\n\n## 1.4.1\n- parse('') no longer raises.\n"}, "Edited CHANGELOG.md."),
    ("Thanks. Summarise what you changed.", None, None, None),
]


def system_prompt(tokenizer: Tokenizer, target_tokens: int) -> str:
    """Rules plus tool schemas, repeated with variations until about ``target_tokens``."""
    parts, n, i = [RULES], 0, 0
    while n < target_tokens:
        name = TOOLS[i % len(TOOLS)]
        schema = {"name": f"{name}" if i < len(TOOLS) else f"{name}_{i}",
                  "description": f"{name.replace('_', ' ').capitalize()}: use it when the task needs it. "
                  "Arguments are validated; errors come back as tool results. " * 3,
                  "input_schema": {"type": "object", "properties": {
                      "path": {"type": "string", "description": "absolute or repository-relative path"},
                      "pattern": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}},
                      "required": ["path"]}}
        parts.append(f"<tool>{json.dumps(schema)}</tool>\n")
        i += 1
        n = len(tokenizer.encode("".join(parts)).ids)
    return "".join(parts)


def conversation(system: str, upto: int) -> list[tuple[str, str]]:
    """The messages the client sends at turn ``upto`` (0-based)."""
    messages = [("system", system)]
    task = ""
    for i, (user, tool, args, result) in enumerate(TURNS[:upto + 1]):
        if user:
            task = user
            messages.append(("user", user))
        if i == upto:
            break
        if tool:
            messages.append(("assistant", f'<tool_call>{{"name": "{tool}", "arguments": {json.dumps(args)}}}'
                                          "</tool_call>"))
            messages.append(("user", f"<tool_result>{result}</tool_result>\nContinue with: {task}"))
    return messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--servers", default="mlxrpc,vllm-mlx,mlx_lm.server", help="comma-separated server specs")
    parser.add_argument("--system-tokens", type=int, default=10000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--restart-after", type=int, default=0,
                        help="restart every server after this turn (1-8), on its disk tier (servers.disk_tier)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--blas", default="auto", help="auto (system OpenBLAS), bundled or a path; every server")
    args = parser.parse_args()
    specs, skipped = available(args.servers.split(","))
    model = long_model(32768)
    bias, library = eos_bias(model), find_library(args.blas)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.system_tokens)
    rows: dict[str, list[list[StreamResult]]] = {s: [] for s in specs}
    for r in range(args.rounds):
        for spec in rotated(specs, r):
            with tempfile.TemporaryDirectory(prefix="mlxrpc-replay-") as folder:
                rows[spec].append(replay(spec, model, library, bias, system, args.max_tokens, args.restart_after,
                                         folder))
    print(f"# agent replay: {len(TURNS)} turns, ~{args.system_tokens}-token system prompt, {args.max_tokens} "
          f"tokens/turn{f', restart after turn {args.restart_after}' if args.restart_after else ''}, "
          f"{args.rounds} round(s), medians ({machine()})\n")
    print(describe(specs, library) + "\n")
    print("| turn | " + " | ".join(f"{s}: prompt / cached tokens | TTFT s | turn s" for s in specs) + " |")
    print("|---|" + "---|---|---|" * len(specs))
    for i in range(len(TURNS)):
        cells = [f"{rows[s][0][i].prompt_tokens} / {cached(rows[s][0][i].cached_tokens)} | "
                 f"{median([t[i].ttft for t in rows[s]]):.2f} | {median([t[i].total for t in rows[s]]):.2f}"
                 for s in specs]
        print(f"| {i + 1}{' (after restart)' if i == args.restart_after > 0 else ''} | " + " | ".join(cells) + " |")
    totals = [f"**{median([sum(t.total for t in turns) for turns in rows[s]]):.1f} s**" for s in specs]
    print("| total | " + " | ".join(f" | | {t}" for t in totals) + " |")
    for spec, reason in skipped.items():
        print(f"- {spec} not measured: {reason}")


def replay(spec: str, model: Path, library: str | None, bias: dict[str, float], system: str, tokens: int,
           restart_after: int, folder: str) -> list[StreamResult]:
    """The turns of one server, restarted on its disk tier after ``restart_after`` (0: never)."""
    tiered, home = disk_tier(spec, folder) if restart_after else (spec, None)
    results = []

    async def ask(served: Served, i: int) -> StreamResult:
        async with client() as session:
            return await served.chat(session, conversation(system, i), tokens, bias)

    for part in ([range(restart_after), range(restart_after, len(TURNS))] if restart_after else [range(len(TURNS))]):
        with start(tiered, model, library, bias, home=home) as served:
            results += [asyncio.run(ask(served, i)) for i in part]
    return results


if __name__ == "__main__":
    main()
