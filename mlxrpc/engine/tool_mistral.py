"""Mistral's tool calls: ``[TOOL_CALLS]NAME[ARGS]{...}`` (Devstral, Mistral
Small 3.2 with ``[CALL_ID]ID`` before ``[ARGS]``, Ministral 3), each marker a
control token. mlx-lm's parser reads the whole text; ``read_mistral_call``
follows one call as written, ``mistral_call_grammar`` forces one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .structured import json_lark
from .tool_json import value_end

if TYPE_CHECKING:
    from .tools import ToolFormat

ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"


def read_mistral_call(body: str, tools: Any = None) -> tuple[str | None, str, bool]:
    """(name once its [ARGS] is written, argument JSON so far, complete)."""
    head, sep, arguments = body.partition(ARGS)
    if not sep:
        return None, "", False
    name = head.partition(CALL_ID)[0].strip()
    if not name:
        return None, "", False
    start = len(arguments) - len(arguments.lstrip())
    if start >= len(arguments) or arguments[start] not in "{[":
        return name, "", False
    end = value_end(arguments, start)
    return name, arguments[start: end if end is not None else len(arguments)], end is not None


def mistral_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    """Lark for one call: the control tokens by id, the name, the arguments' JSON."""
    start, args = fmt.start_tokens[0], fmt.extra_tokens[0]
    rules = [f"start: <[{start}]> call", "call: " + " | ".join(f"f{i}" for i in range(len(tools)))]
    for i, tool in enumerate(tools):
        function = tool["function"]
        rules.append(f"f{i}: {json.dumps(function['name'])} <[{args}]> a{i}")
        rules.append(f"a{i}: {json_lark(function.get('parameters') or {'type': 'object'})}")
    return "\n".join(rules)
