"""Gemma 4's tool calls: ``<|tool_call>call:NAME{key:VALUE,…}<tool_call|>``.

Keys are bare, strings sit between ``<|"|>`` tokens (no escapes), numbers and
booleans are bare, objects and arrays nest in the same syntax. mlx-lm's
``gemma4`` parser reads a call whole; ``read_gemma_call`` turns one as far as
it is written into JSON argument text that only grows (strings stream as
written, other values once they end), and ``gemma_call_grammar`` forces a call
whose values follow the tool's JSON schema, strict: no keys beyond the schema's
unless it allows additional properties.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import TYPE_CHECKING, Any

from .lark import json_lark
from .tool_json import marker

if TYPE_CHECKING:
    from .tool_format import ToolFormat

QUOTE = '<|"|>'
_NAME = re.compile(r"\s*call:([\w.-]+)\{")
_KEY = re.compile(r"\s*([^\s:{}\[\],<]+)\s*:")


def fold_tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's tool messages as Gemma 4's template reads results: ``tool_responses``
    ({name, response}) on the assistant message that made the calls, so they render
    as ``<|tool_response>response:NAME{…}<tool_response|>`` inside the model's turn
    (a ``tool`` role would render as a turn of its own, which Gemma never saw)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = out[-1].get("tool_calls") if out and out[-1].get("role") == "assistant" else None
        if message.get("role") != "tool" or not calls:
            out.append(message)
            continue
        names = {c.get("id"): (c.get("function") or {}).get("name") for c in calls}
        name = names.get(message.get("tool_call_id")) or message.get("name") or (
            next(iter(names.values())) if len(names) == 1 else "unknown")
        response: Any = message.get("content") or ""
        if isinstance(response, str) and response.lstrip().startswith("{"):
            with contextlib.suppress(ValueError):
                response = json.loads(response)
        previous = out[-1]
        out[-1] = {**previous, "tool_responses": [*previous.get("tool_responses", []),
                                                  {"name": name, "response": response}]}
    return out


def gemma_native(tokenizer: Any) -> dict[str, Any]:
    """The ToolFormat fields of Gemma 4's calls (its string quote is one added token)."""
    quote = tokenizer.get_vocab().get(QUOTE) if tokenizer is not None else None
    return {"grammar": gemma_call_grammar, "reader": read_gemma_call,
            "tokens": {"quote": quote} if quote is not None else {}}


def read_gemma_call(body: str, tools: Any = None) -> tuple[str | None, str, bool]:
    """(name once written, JSON argument text so far, whether the call is complete)."""
    found = _NAME.match(body)
    if found is None:
        return None, "", False
    out, complete = _Converter(body, found.end() - 1).run()
    return found.group(1), out, complete


class _Converter:
    """Gemma's value syntax → JSON text, stopping where the written text stops being final."""

    def __init__(self, text: str, pos: int) -> None:
        self.text, self.pos, self.out = text, pos, []

    def run(self) -> tuple[str, bool]:
        stack: list[str] = []  # "{" (expecting a key next when the flag is set) or "["
        expect_key = False
        text = self.text
        while True:
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            if self.pos >= len(text):
                break
            c = text[self.pos]
            if expect_key and c != "}":
                if text.startswith(QUOTE, self.pos):  # a quoted key (tool results write them)
                    close = text.find(QUOTE, self.pos + len(QUOTE))
                    if close < 0 or not text.startswith(":", close + len(QUOTE)):
                        break
                    key, self.pos = text[self.pos + len(QUOTE):close], close + len(QUOTE) + 1
                else:
                    found = _KEY.match(text, self.pos)
                    if found is None:
                        break
                    key, self.pos = found.group(1), found.end()
                self.out.append(json.dumps(key, ensure_ascii=False) + ": ")
                expect_key = False
                continue
            if c in "{[":
                stack.append(c)
                self.out.append(c)
                self.pos += 1
                expect_key = c == "{"
            elif c in "}]":
                if not stack:
                    break
                stack.pop()
                self.out.append(c)
                self.pos += 1
                if not stack:
                    return "".join(self.out), True
            elif c == ",":
                self.out.append(", ")
                self.pos += 1
                expect_key = stack[-1] == "{" if stack else False
            elif text.startswith(QUOTE, self.pos):
                if not self._string():
                    break
            elif not self._scalar():
                break
        return "".join(self.out), False

    def _string(self) -> bool:
        start = self.pos + len(QUOTE)
        close = self.text.find(QUOTE, start)
        if close >= 0:
            self.out.append(json.dumps(self.text[start:close], ensure_ascii=False))
            self.pos = close + len(QUOTE)
            return True
        raw = self.text[start:]
        for k in range(min(len(raw), len(QUOTE) - 1), 0, -1):  # maybe the closing quote, arriving
            if QUOTE.startswith(raw[-k:]):
                raw = raw[:-k]
                break
        self.out.append(json.dumps(raw, ensure_ascii=False)[:-1])
        return False

    def _scalar(self) -> bool:
        found = re.compile(r"[^,}\]]*").match(self.text, self.pos)
        end = found.end() if found else self.pos
        if end >= len(self.text):
            return False  # it may go on
        raw = self.text[self.pos:end].strip()
        self.out.append(_scalar_json(raw))
        self.pos = end
        return True


def _scalar_json(raw: str) -> str:
    if raw in ("true", "false", "null"):
        return raw
    if raw == "None":
        return "null"
    try:
        value = json.loads(raw)
    except ValueError:
        return json.dumps(raw, ensure_ascii=False)
    return json.dumps(value) if isinstance(value, (int, float)) else json.dumps(raw, ensure_ascii=False)


def gemma_call_grammar(tools: list[dict[str, Any]], fmt: ToolFormat, added_ids: set[int]) -> str:
    """Lark for one call to one of ``tools``: keys in sorted order (as the template
    writes them), the required ones always; each value in its schema's type."""
    quote = fmt.tokens.get("quote")
    grammar = _Grammar(marker(QUOTE, (quote,) if quote is not None else (), added_ids))
    functions = []
    for tool in tools:
        function = tool["function"]
        body = grammar.object(function.get("parameters") or {"type": "object"})
        functions.append(f"{json.dumps('call:' + function['name'])} {body}")
    start = [marker(fmt.start, fmt.start_tokens, added_ids), "call", marker(fmt.end, fmt.end_tokens, added_ids)]
    return "\n".join([f"start: {' '.join(start)}", f"call: {' | '.join(functions)}", *grammar.rules])


class _Grammar:
    """Rules for Gemma values under JSON schemas (one rule per schema node)."""

    def __init__(self, quote: str) -> None:
        self.quote = quote
        # Text up to the closing quote, never '<|' (the quote's text spelled out would read
        # as the quote). When the quote is no token, a '<' would start it: a greedy lexeme
        # must not run on into it, so strings then hold no '<' at all.
        text = "/(?s:([^<]|<+[^|<])*<*)/" if quote.startswith("<[") else "/[^<]*/"
        self.rules: list[str] = [
            f"g_string: {quote} {text} {quote}",
            'g_key: /[A-Za-z_][A-Za-z0-9_]*/',
            'g_value: g_string | g_number | "true" | "false" | g_object | g_array',
            r'g_number: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/',
            'g_member: g_key ":" g_value',
            'g_object: "{" (g_member ("," g_member)*)? "}"',
            'g_array: "[" (g_value ("," g_value)*)? "]"',
        ]

    def _rule(self, body: str) -> str:
        name = f"r{len(self.rules)}"
        self.rules.append(f"{name}: {body}")
        return name

    def value(self, schema: Any) -> str:
        if not isinstance(schema, dict) or not schema:
            return "g_value"
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            return self._rule(" | ".join(self._literal(v) for v in values))
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._rule(" | ".join(self.value({**schema, "type": k}) for k in kind))
        if kind == "string":
            return self._string(schema)
        if kind in ("integer", "number"):
            return self._rule(json_lark({k: v for k, v in schema.items() if k != "description"}))
        if kind == "boolean":
            return self._rule('"true" | "false"')
        if kind == "object":
            return self.object(schema)
        if kind == "array":
            item = self.value(schema.get("items"))
            return self._rule(f'"[" ({item} ("," {item})*)? "]"')
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return self._rule(" | ".join(self.value(s) for s in schema[key]))
        return "g_value"

    def _string(self, schema: dict[str, Any]) -> str:
        if "maxLength" in schema or "minLength" in schema:
            low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
            repeat = f"{{{low},{int(high)}}}" if high is not None else f"{{{low},}}"
            return self._rule(f"{self.quote} /[^<]{repeat}/ {self.quote}")
        return "g_string"

    def _literal(self, value: Any) -> str:
        if isinstance(value, str):
            return f"{self.quote} {json.dumps(value)} {self.quote}" if value else f"{self.quote} {self.quote}"
        return json.dumps(json.dumps(value))

    def object(self, schema: dict[str, Any]) -> str:
        """``{…}`` with the schema's properties in sorted order; extra keys only when allowed."""
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = set(schema.get("required") or ())
        extra = schema.get("additionalProperties", not props)
        # first[j] / more[j]: members j.. with nothing / something written before them.
        first: str | None = "(g_member (\",\" g_member)*)?" if extra not in (False, None) else None
        more: str | None = '("," g_member)*' if first else None
        for key in sorted(props, reverse=True):
            member = self._rule(f"{json.dumps(key + ':')} {self.value(props[key])}")
            then = f"{member} {more}" if more else member
            later = f'"," {then}'
            if key in required:
                first, more = self._rule(then), self._rule(later)
            else:
                first = self._rule(f"{then} | {first}" if first else f"({then})?")
                more = self._rule(f"{later} | {more}" if more else f"({later})?")
        return self._rule(f'"{{" {first} "}}"' if first else '"{" "}"')
