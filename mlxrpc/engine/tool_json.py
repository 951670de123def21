"""Tool calls written as JSON ``{"name": ..., "arguments": {...}}``: Qwen3 and
Hermes between ``<tool_call>`` tags, Llama 3.x bare (``"parameters"``).

``JsonCallReader`` follows a call's text as it is written, so the name and
the raw argument text stream out before the call ends; the forced-call
grammar writes exactly that shape.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .lark import json_lark

if TYPE_CHECKING:
    from .tool_format import ToolFormat

_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def json_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    """Lark for one call: the markers (an added token named by its id) around the JSON."""
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                fmt.arguments_key: t["function"].get("parameters") or {"type": "object"},
            },
            "required": ["name", fmt.arguments_key],
            "additionalProperties": False,
        }
        for t in tools
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    parts = ["call"]
    if fmt.start:
        parts = [marker(fmt.start, fmt.start_tokens, added_ids), json.dumps("\n"), "call"]
        if fmt.end:
            parts += [json.dumps("\n"), marker(fmt.end, fmt.end_tokens, added_ids)]
    return f"start: {' '.join(parts)}\ncall: {json_lark(schema)}"


def marker(text: str, tokens: tuple[int, ...], added_ids: set[int]) -> str:
    """A marker in lark: its token when it is one added token, else its text."""
    if len(tokens) == 1 and tokens[0] in added_ids:
        return f"<[{tokens[0]}]>"
    return json.dumps(text)


def value_end(text: str, start: int) -> int | None:
    """Where the JSON object or array opening at ``start`` ends (exclusive); None while open."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def read_json_call(body: str, keys: tuple[str, ...]) -> tuple[str | None, str, bool]:
    """(name once written, argument text so far, whether the arguments are complete)."""
    found = re.search(r'"(' + "|".join(keys) + r')"\s*:\s*', body)
    head = body[: found.start()] if found else body
    name_match = _NAME.search(head)
    name = json.loads(f'"{name_match.group(1)}"') if name_match else None
    if found is None:
        return name, "", False
    start = found.end()
    if start >= len(body):
        return name, "", False
    if body[start] not in "{[":
        # Arguments as a JSON string (or a scalar): only whole.
        try:
            value, _ = json.JSONDecoder().raw_decode(body[start:])
        except ValueError:
            return name, "", False
        return name, value if isinstance(value, str) else json.dumps(value), True
    end = value_end(body, start)
    return name, body[start: end if end is not None else len(body)], end is not None


def split_json_objects(text: str) -> list[str]:
    """Llama's bare calls: consecutive objects (';' or newlines between), the last maybe open."""
    bodies, i = [], 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return bodies
        end = value_end(text, start)
        bodies.append(text[start: end if end is not None else len(text)])
        if end is None:
            return bodies
        i = end
