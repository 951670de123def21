"""Tool calls written as XML parameters: Qwen3-Coder and Qwen3.5::

    <tool_call>
    <function=NAME>
    <parameter=KEY>
    VALUE
    </parameter>
    </function>
    </tool_call>

MiniMax-M2 (``<minimax:tool_call>``, ``<invoke name="NAME">``,
``<parameter name="KEY">VALUE</parameter>``, ``</invoke>``), and GLM-4.6/4.7
(``<tool_call>NAME<arg_key>KEY</arg_key><arg_value>VALUE</arg_value>…</tool_call>``:
no separators, the call's end marker closes the function, the tags are added
tokens that a grammar names by id).

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
    close: str = _CLOSE  # the tag that ends a value, as the reader finds it
    pad: str = "\n"  # a newline the reader trims on either side of a value
    lead: str = "\n"  # written after the call's start marker


QWEN3_CODER = XmlStyle(re.compile(r"<function=([^>\n]+)>"), "<function={name}>\n", "</function>",
                       re.compile(r"<parameter=([^>\n]+)>"), "<parameter={key}>\n", "\n" + _CLOSE, "\n")
MINIMAX = XmlStyle(re.compile(r'<invoke name="([^"]+)">'), '<invoke name="{name}">\n', "</invoke>",
                   re.compile(r'<parameter name="([^"]+)">'), '<parameter name="{key}">', _CLOSE, "\n")
# The function closes with the call's end marker, which the reader sees (ToolFormat.end_in_body).
GLM_TAGS = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
GLM = XmlStyle(re.compile(r"\A\s*([^<\s]+)\s*(?=<arg_key>|</tool_call>)"), "{name}", "</tool_call>",
               re.compile(r"<arg_key>([^<]*)</arg_key>\s*<arg_value>"), "<arg_key>{key}</arg_key><arg_value>",
               "</arg_value>", "", close="</arg_value>", pad="", lead="")


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


def glm_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    return styled_call_grammar(tools, fmt, added_ids, GLM)


def styled_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int],
                        style: XmlStyle) -> str:
    """Lark for one call to one of ``tools``: required parameters always, the
    others optional, in the schema's order; each value in its type. Keys beyond
    the schema only where it allows them (``additionalProperties``), as text."""
    from .tool_json import marker

    def lit(text: str) -> str:
        return _literal(text, fmt.tokens, added_ids)

    # A free string's stop consumes a closing tag written as text; a tag that is a token follows it.
    token_close = fmt.tokens.get(style.value_close) in added_ids

    def parameter(rule: str, key: str, schema: Any) -> list[str]:
        free = _type(schema) == "string" and _free_string(schema)
        closing = "" if free and not token_close else lit(style.value_close)
        return [f"{rule}_v: {_value_lark(schema, style.value_close, token_close, rule)}",
                f"{rule}: {key} {rule}_v {closing} {lit(style.after)}"]

    rules, functions = [], []
    for i, tool in enumerate(tools):
        function = tool["function"]
        parameters = function.get("parameters") or {}
        required = set(parameters.get("required") or ())
        parts = []
        for j, (key, schema) in enumerate((parameters.get("properties") or {}).items()):
            rules += parameter(f"p{i}_{j}", lit(style.parameter_open.format(key=key)), schema)
            parts.append(f"p{i}_{j}" + ("" if key in required else "?"))
        if parameters.get("additionalProperties"):
            before, _, after = style.parameter_open.partition("{key}")
            rules += parameter(f"x{i}", f"{lit(before)} /[A-Za-z0-9_.-]+/ {lit(after)}", {"type": "string"})
            parts.append(f"x{i}*")
        closing = "" if style.function_close == fmt.end else lit(style.function_close)
        rules.append(f"f{i}: {lit(style.function_open.format(name=function['name']))} {' '.join(parts)} {closing}")
        functions.append(f"f{i}")
    after = "" if style.function_close == fmt.end else lit(style.after)
    start = [marker(fmt.start, fmt.start_tokens, added_ids), lit(style.lead), "call", after,
             marker(fmt.end, fmt.end_tokens, added_ids)]
    return "\n".join([f"start: {' '.join(start)}", f"call: {' | '.join(functions)}", *rules])


def _literal(text: str, tokens: dict[str, int], added_ids: set[int]) -> str:
    """``text`` in lark: the markers among ``tokens`` that are added tokens by id, the rest quoted."""
    if not text:
        return ""
    names = [t for t in tokens if tokens[t] in added_ids and t in text]
    if not names:
        return json.dumps(text)
    pieces = re.split("(" + "|".join(re.escape(t) for t in names) + ")", text)
    return " ".join(f"<[{tokens[p]}]>" if p in names else json.dumps(p) for p in pieces if p)


def _free_string(schema: dict[str, Any]) -> bool:
    return "enum" not in schema and "maxLength" not in schema and "const" not in schema


def _value_lark(schema: Any, close: str, token_close: bool, rule: str) -> str:
    kind = _type(schema)
    if kind == "string":
        if "enum" in schema or "const" in schema:
            values = schema.get("enum") or [schema["const"]]
            return " | ".join(json.dumps(str(v)) for v in values)
        if "maxLength" in schema:
            return f"/[^\\n]{{{int(schema.get('minLength', 0))},{int(schema['maxLength'])}}}/"
        if token_close:
            return "/(?s:.*)/"  # free text; no text lexeme can take the closing token
        # Free text up to the closing tag (which the stop consumes).
        return f"{rule}_text\n{rule}_text[stop={json.dumps(close)}]: /(?s:.*)/"
    # Numbers, booleans, objects, arrays: their JSON text, bounds and all.
    return json_lark(schema if isinstance(schema, dict) else {})


def read_xml_call(body: str, tools: list[dict[str, Any]] | None) -> tuple[str | None, str, bool]:
    return read_styled_call(body, tools, QWEN3_CODER)


def read_minimax_call(body: str, tools: list[dict[str, Any]] | None) -> tuple[str | None, str, bool]:
    return read_styled_call(body, tools, MINIMAX)


def read_glm_call(body: str, tools: list[dict[str, Any]] | None) -> tuple[str | None, str, bool]:
    return read_styled_call(body, tools, GLM)


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
        close = region.find(style.close, opened.end())
        raw = region[opened.end(): close if close >= 0 else len(region)]
        raw = raw.removeprefix(style.pad)
        if close >= 0:
            value = _typed(raw.removesuffix(style.pad), props.get(key))
            members.append(f"{json.dumps(key, ensure_ascii=False)}: {value}")
            pos = close + len(style.close)
            continue
        if _type(props.get(key)) == "string" and (opened.end() < len(region)):
            for k in range(min(len(raw), len(style.close) + 1), 0, -1):
                if (style.pad + style.close).startswith(raw[-k:]) or style.close.startswith(raw[-k:]):
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
