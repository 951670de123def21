"""The family × feature matrix of tool calling and reasoning, as docs/api.md shows it.

Each cell says what the tests prove for the family (tests/test_tool_matrix.py,
tests/test_families.py); ``python -m tests.zoo.matrix`` rewrites the table in
docs/api.md and tests/test_tool_matrix.py checks the two agree.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
START, END = "<!-- family-matrix:start -->", "<!-- family-matrix:end -->"

COLUMNS = ["chat, stream", "auto calls parsed", "forced calls (native format)", "args stream, cut call kept",
           "tool results", "reasoning split", "reasoning_effort", "JSON schema after reasoning"]

_OK = "yes"
_NO_TOOLS = "400 (template has no tool calls)"

# family: (how it is built, its call format, the cells in COLUMNS' order)
MATRIX: dict[str, tuple[str, str, list[str]]] = {
    "qwen3": ("real vocab + template", "`<tool_call>` JSON",
              [_OK, _OK, _OK, _OK, _OK, "`<think>`", "on/off", _OK]),
    "qwen3-coder": ("real vocab + template", "`<tool_call><function=…>` XML, typed by schema",
                    [_OK, _OK, _OK, _OK, _OK, "`<think>`", "on/off", _OK]),
    "qwen3.5": ("qwen35 vocab, Qwen3 tokens (stand-in ids)", "XML as Qwen3-Coder",
                [_OK, _OK, _OK, _OK, _OK, "`<think>` (prompt opens it)", "on/off", _OK]),
    "qwq": ("real vocab + template", "`<tool_call>` JSON",
            [_OK, _OK, _OK, _OK, _OK, "`<think>` (prompt opens it)", "on/off", _OK]),
    "gpt-oss": ("harmony tokens on Llama 3 BPE", "harmony `<|channel|>commentary to=functions.NAME`",
                [_OK, _OK, _OK, _OK, _OK, "analysis channel", "low/medium/high", _OK]),
    "minimax-m2": ("Qwen2 BPE + MiniMax tokens (stand-in)", "`<minimax:tool_call><invoke name=…>` XML, typed by schema",
                   [_OK, _OK, _OK, _OK, _OK, "`<think>` (prompt opens it)", "on/off", _OK]),
    "glm-4.7": ("Qwen2 BPE + GLM tokens (stand-in)", "`<tool_call>NAME<arg_key>…<arg_value>…` typed by schema",
                [_OK, _OK, _OK, _OK, _OK, "`<think>` (prompt opens it)", "on/off", _OK]),
    "granite-4": ("Llama 3 BPE + Granite tokens (stand-in)", "`<tool_call>` JSON",
                  [_OK, _OK, _OK, _OK, _OK, "-", "400 (no setting)", "-"]),
    "gemma-4": ("real vocab + template (gemma3_text stand-in)",
                "`<|tool_call>call:NAME{key:<|\"|>…<|\"|>}`, typed by schema",
                [_OK, _OK, _OK, _OK, "yes (`tool_responses` in the calling turn)", "`<|channel>thought`", "on/off",
                 _OK]),
    "devstral": ("Tekken (mistral-common) + template", "`[TOOL_CALLS]NAME[ARGS]{…}`",
                 [_OK, _OK, _OK, _OK, _OK, "-", "400 (no setting)", "-"]),
    "ministral3-reasoning": ("Tekken + template", "`[TOOL_CALLS]NAME[ARGS]{…}`",
                             [_OK, _OK, _OK, _OK, _OK, "`[THINK]`", "400 (no setting)", _OK]),
    "kimi-k2": ("Qwen2 BPE + Kimi tokens (stand-in)", "`<|tool_call_begin|>functions.NAME:0…`",
                [_OK, _OK, _OK, _OK, _OK, "-", "400 (no setting)", "-"]),
    "deepseek-v3.1": ("Qwen2 BPE + DeepSeek tokens (stand-in)", "`<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}`",
                      [_OK, _OK, _OK, _OK, _OK, "`<think>` (off by default)", "on/off", "-"]),
    "llama3.1": ("real vocab + template", "bare JSON `{\"name\", \"parameters\"}`",
                 [_OK, _OK, _OK, _OK, _OK, "-", "400 (no setting)", "-"]),
    "hermes3": ("real vocab + template", "`<tool_call>` JSON",
                [_OK, _OK, _OK, _OK, _OK, "-", "400 (no setting)", "-"]),
    "deepseek-r1-qwen": ("real vocab + template", "-",
                         [_OK, _NO_TOOLS, _NO_TOOLS, "-", "-", "`<think>` (prompt opens it)", "on/off", _OK]),
    "phi3.5": ("real vocab + template", "-",
               [_OK, _NO_TOOLS, _NO_TOOLS, "-", "-", "-", "400 (no setting)", "-"]),
}

def render() -> str:
    head = ["family", "built from", "call format", *COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for family, (built, call, cells) in MATRIX.items():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in [family, built, call, *cells]) + " |")
    return "\n".join([START, *lines, END])


def current() -> str:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    return text[start: end + len(END)] if start >= 0 and end >= 0 else ""


def write() -> None:
    text = DOC.read_text(encoding="utf-8")
    old = current()
    DOC.write_text(text.replace(old, render()) if old else text + "\n" + render() + "\n", encoding="utf-8")


if __name__ == "__main__":
    write()
    sys.stdout.write(f"wrote the family matrix into {DOC}\n")
