"""Tool calls written as XML parameters: Qwen3-Coder and Qwen3.5::

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    </function>
    </tool_call>

and MiniMax-M2 (``<minimax:tool_call>``, ``<invoke name="NAME">``,
``<parameter name="KEY">VALUE</parameter>``, ``</invoke>``).

Values are bare text typed by the tool's JSON schema. ``xml_call_grammar``
forces that shape with each value in its schema's type; ``read_xml_call``
turns a call, as far as it is written, into JSON argument text that only
grows (string values stream character by character; other values when
their parameter closes), so arguments stream as the model writes them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .lark import json_lark

if TYPE_CHECKING:
    from .tool_format import ToolFormat

_CLOSE = "</parameter>"


@dataclass(frozen=True)
class XmlStyle:
    """How one family spells functions and parameters."""

    function: re.Pattern[str]  # group 1: the name
    function_open: str  # with {name}
    function_close: str
    parameter: re.Pattern[str]  # group 1: the key
    parameter_open: str  # with {key}
    value_close: str  # what ends a value (the stop of a free string)
    after: str  # written after each parameter and after the function


QWEN3_CODER = XmlStyle(re.compile(r"<function=([^>\n]+)>"), "<function={name}>\n", "</function>",
                       re.compile(r"<parameter=([^>\n]+)>"), "<parameter={key}>\n", "\n" + _CLOSE, "\n")
MINIMAX = XmlStyle(re.compile(r'<invoke name="([^"]+)">'), '<invoke name="{name}">\n', "</invoke>",
                   re.compile(r'<parameter name="([^"]+)">'), '<parameter name="{key}">', _CLOSE, "\n")


def _properties(tools: list[dict[str, Any]] | None, name: str) -> dict[str, Any]:
    for tool in tools or []:
        function = tool.get("function") or {}
        if function.get("name") == name:
            props = (function.get("parameters") or {}).get("properties")
            return props if isinstance(props, dict) else {}
    return {}


def _type(schema: Any) -> str | None:
    """The one JSON type a parameter's schema names (enums of strings are strings)."""
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if "enum" in schema and all(isinstance(v, str) for v in schema["enum"]):
        return "string"
    return None


def xml_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    return styled_call_grammar(tools, fmt, added_ids, QWEN3_CODER)


def minimax_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    return styled_call_grammar(tools, fmt, added_ids, MINIMAX)


def styled_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int],
                        style: XmlStyle) -> str:
    """Lark for one call to one of ``tools``: required parameters always, the
    others optional, in the schema's order; each value in its type."""
    from .tool_json import marker

    rules, functions = [], []
    for i, tool in enumerate(tools):
        function = tool["function"]
        parameters = function.get("parameters") or {}
        required = set(parameters.get("required") or ())
        parts = []
        for j, (key, schema) in enumerate((parameters.get("properties") or {}).items()):
            rules.append(f"v{i}_{j}: {_value_lark(schema, style.value_close)}")
            free = _type(schema) == "string" and _free_string(schema)  # its stop wrote the close
            closing = "" if free else " " + json.dumps(style.value_close)
            opening = json.dumps(style.parameter_open.format(key=key))
            rules.append(f"p{i}_{j}: {opening} v{i}_{j}{closing} {json.dumps(style.after)}")
            parts.append(f"p{i}_{j}" + ("" if key in required else "?"))
        opening = json.dumps(style.function_open.format(name=function["name"]))
        rules.append(f"f{i}: {opening} {' '.join(parts)} {json.dumps(style.function_close)}")
        functions.append(f"f{i}")
    start = [marker(fmt.start, fmt.start_tokens, added_ids), '"\\n"', "call", json.dumps(style.after),
             marker(fmt.end, fmt.end_tokens, added_ids)]
    return "\n".join([f"start: {' '.join(start)}", f"call: {' | '.join(functions)}", *rules])


def _free_string(schema: dict[str, Any]) -> bool:
    return "enum" not in schema and "maxLength" not in schema and "const" not in schema


def _value_lark(schema: Any, close: str) -> str:
    kind = _type(schema)
    if kind == "string":
        if "enum" in schema or "const" in schema:
            values = schema.get("enum") or [schema["const"]]
            return " | ".join(json.dumps(str(v)) for v in values)
        if "maxLength" in schema:
            return f"/[^\\n]{{{int(schema.get('minLength', 0))},{int(schema['maxLength'])}}}/"
        # Free text up to the closing tag (which the stop consumes).
        return f"value_text\nvalue_text[stop={json.dumps(close)}]: /(?s:.*)/"
    # Numbers, booleans, objects, arrays: their JSON text, bounds and all.
    return json_lark(schema if isinstance(schema, dict) else {})


def read_xml_call(body: str, tools: list[dict[str, Any]] | None) -> tuple[str | None, str, bool]:
    return read_styled_call(body, tools, QWEN3_CODER)


def read_minimax_call(body: str, tools: list[dict[str, Any]] | None) -> tuple[str | None, str, bool]:
    return read_styled_call(body, tools, MINIMAX)


def read_styled_call(body: str, tools: list[dict[str, Any]] | None,
                     style: XmlStyle) -> tuple[str | None, str, bool]:
    """(name once written, JSON argument text so far, whether the call is complete)."""
    found = style.function.search(body)
    if found is None:
        return None, "", False
    name = found.group(1).strip()
    props = _properties(tools, name)
    rest = body[found.end():]
    end = rest.find(style.function_close)
    region = rest if end < 0 else rest[:end]
    members: list[str] = []
    partial = ""
    pos = 0
    while (opened := style.parameter.search(region, pos)) is not None:
        key = opened.group(1).strip()
        close = region.find(_CLOSE, opened.end())
        raw = region[opened.end(): close if close >= 0 else len(region)]
        raw = raw.removeprefix("\n")
        if close >= 0:
            value = _typed(raw.removesuffix("\n"), props.get(key))
            members.append(f"{json.dumps(key, ensure_ascii=False)}: {value}")
            pos = close + len(_CLOSE)
            continue
        if _type(props.get(key)) == "string" and (opened.end() < len(region)):
            for k in range(min(len(raw), len(_CLOSE) + 1), 0, -1):
                if ("\n" + _CLOSE).startswith(raw[-k:]) or _CLOSE.startswith(raw[-k:]):
                    raw = raw[:-k]
                    break
            partial = f"{json.dumps(key, ensure_ascii=False)}: {json.dumps(raw, ensure_ascii=False)[:-1]}"
        break
    text = "{" + ", ".join(members + ([partial] if partial else []))
    return name, text + ("}" if end >= 0 else ""), end >= 0


def _typed(raw: str, schema: Any) -> str:
    """A parameter's text as JSON of its schema's type (text that does not fit stays a string)."""
    kind = _type(schema)
    if kind == "string":
        return json.dumps(raw, ensure_ascii=False)
    if kind == "boolean" and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower()
    try:
        value = json.loads(raw)
    except ValueError:
        return json.dumps(raw, ensure_ascii=False)
    if kind in ("integer", "number") and not isinstance(value, (int, float)):
        return json.dumps(raw, ensure_ascii=False)
    if kind is None and not isinstance(value, (dict, list)):
        return json.dumps(raw, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False)
