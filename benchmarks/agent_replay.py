"""Agent-session replay: an 8-turn coding-agent conversation with a long system prompt.

The shape follows what agent CLIs send (Claude Code, Codex, OpenCode): a
10–20k-token system prompt carrying the rules and the JSON schemas of a dozen
tools, then turns of user task → assistant tool call → tool result, the
whole history resent each turn. The content is synthetic (no private data).
Each turn reports its time to first token, total time and the prompt tokens
served from cache. With ``--restart-after N`` the server is restarted after
turn N (use it with ``--prompt-cache-dir``): the next turn shows what the
disk tier keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

import grpc
from tokenizers import Tokenizer

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .common import Server, machine
from .long_context import long_model

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


async def turn(port: int, messages: list[tuple[str, str]], max_tokens: int) -> tuple[float, float, int, int]:
    request = pb.GenerateRequest(model="bench")
    for role, text in messages:
        request.chat.messages.add(role=role).content.add(text=text)
    request.stopping.max_tokens, request.stopping.ignore_eos, request.sampling.temperature = max_tokens, True, 0.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        start, first = time.perf_counter(), None
        async for message in pb_grpc.InferenceStub(channel).StreamGenerate(request):
            if message.token_ids and first is None:
                first = time.perf_counter() - start
            if message.HasField("finish"):
                usage = message.finish.usage
    return first or float("nan"), time.perf_counter() - start, usage.prompt_tokens, usage.cached_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system-tokens", type=int, default=12000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--restart-after", type=int, default=0, help="restart the server after this turn (1-8)")
    parser.add_argument("--prompt-cache-dir", default="", help="default with --restart-after: a temp folder")
    parser.add_argument("--blas", default="bundled")
    parser.add_argument("serve_args", nargs="*", help="more `mlxrpc serve` flags (after --)")
    args = parser.parse_args()
    model = long_model(32768)
    system = system_prompt(Tokenizer.from_file(str(model / "tokenizer.json")), args.system_tokens)
    cache_dir = args.prompt_cache_dir or (tempfile.mkdtemp(prefix="mlxrpc-replay-") if args.restart_after else "")
    flags = ["--blas", args.blas, *(["--prompt-cache-dir", cache_dir] if cache_dir else []), *args.serve_args]
    print(f"# agent replay: {len(TURNS)} turns, ~{args.system_tokens}-token system prompt, "
          f"{args.max_tokens} tokens/turn, flags {' '.join(flags)} ({machine()})\n")
    print("| turn | prompt tokens | cached tokens | TTFT s | turn s |\n|---|---|---|---|---|")
    total, server = 0.0, Server(model, *flags)
    try:
        for i in range(len(TURNS)):
            ttft, took, prompt, cached = asyncio.run(turn(server.grpc_port, conversation(system, i), args.max_tokens))
            total += took
            print(f"| {i + 1} | {prompt} | {cached} | {ttft:.2f} | {took:.2f} |", flush=True)
            if i + 1 == args.restart_after:
                server.stop()
                server = Server(model, *flags)
                print("| (restart) | | | | |", flush=True)
    finally:
        server.stop()
    print(f"\ntotal {total:.1f} s")


if __name__ == "__main__":
    main()
