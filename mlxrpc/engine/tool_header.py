"""Tool calls written as a name header, a separator token, then JSON arguments:

- Mistral: ``[TOOL_CALLS]NAME[ARGS]{...}`` (Mistral Small 3.2 puts ``[CALL_ID]ID``
  before ``[ARGS]``), after which the turn ends;
- Kimi-K2: ``<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:0
  <|tool_call_argument_begin|>{...}<|tool_call_end|><|tool_calls_section_end|>``;
- DeepSeek-V3.1: ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}
  <｜tool▁call▁end｜><｜tool▁calls▁end｜>``.

Every marker is a control token. ``read_header_call`` follows one call as it
is written; ``header_call_grammar`` forces one, naming the markers by id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .lark import json_lark
from .tool_json import value_end

if TYPE_CHECKING:
    from .tool_format import ToolFormat

ARGS = "[ARGS]"
CALL_ID = "[CALL_ID]"
KIMI_ARGS = "<|tool_call_argument_begin|>"
DEEPSEEK_SEP = "<\uff5ctool\u2581sep\uff5c>"
_KIMI_NAME = re.compile(r"^\s*(?:functions\.)?([^\s:]+)(?::\d+)?\s*$")


def read_header_call(body: str, separator: str,
                     name_of: Callable[[str], str | None]) -> tuple[str | None, str, bool]:
    """(name once the separator is written, argument JSON so far, complete)."""
    head, sep, arguments = body.partition(separator)
    if not sep or not (name := name_of(head)):
        return None, "", False
    start = len(arguments) - len(arguments.lstrip())
    if start >= len(arguments) or arguments[start] not in "{[":
        return name, "", False
    end = value_end(arguments, start)
    return name, arguments[start: end if end is not None else len(arguments)], end is not None


def mistral_name(head: str) -> str | None:
    return head.partition(CALL_ID)[0].strip() or None


def kimi_name(head: str) -> str | None:
    found = _KIMI_NAME.match(head)
    return found.group(1) if found else None


def read_mistral_call(body: str, tools: Any = None) -> tuple[str | None, str, bool]:
    return read_header_call(body, ARGS, mistral_name)


def read_kimi_call(body: str, tools: Any = None) -> tuple[str | None, str, bool]:
    return read_header_call(body, KIMI_ARGS, kimi_name)


def read_deepseek_call(body: str, tools: Any = None) -> tuple[str | None, str, bool]:
    return read_header_call(body, DEEPSEEK_SEP, lambda head: head.strip() or None)


def header_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    """Lark for one call: ``fmt.tokens`` names the markers
    (open, [section], separator, [close, section_end]); names as the family writes them."""
    ids = fmt.tokens
    tok = {key: f"<[{value}]>" for key, value in ids.items()}
    opening = " ".join(tok[k] for k in ("section", "open") if k in tok)
    closing = " ".join(tok[k] for k in ("close", "section_end") if k in tok)
    rules = [f"start: {opening} call {closing}".rstrip(), "call: " + " | ".join(f"f{i}" for i in range(len(tools)))]
    for i, tool in enumerate(tools):
        function = tool["function"]
        name = fmt.name_format.format(name=function["name"])
        rules.append(f"f{i}: {json.dumps(name)} {tok['separator']} a{i}")
        rules.append(f"a{i}: {json_lark(function.get('parameters') or {'type': 'object'})}")
    return "\n".join(rules)
