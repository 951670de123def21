"""Lark text for llguidance grammars: JSON under a schema, and one grammar nested in another.

Pure text building, shared by the response-format grammars (structured.py) and
every family's tool-call grammar (tool_json, tool_xml, tool_header, harmony).
"""

from __future__ import annotations

import json
from typing import Any

# Compact JSON: no free whitespace, so a weak model cannot pad forever.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def strict_schema(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` on every object that lists
    its properties and says nothing else, as OpenAI's strict functions and
    xgrammar's strict mode read it: a weak model cannot invent keys."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) if k in _SUBSCHEMAS else v for k, v in schema.items()}
    for key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas"):
        if isinstance(out.get(key), dict):
            out[key] = {name: strict_schema(sub) for name, sub in out[key].items()}
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


_SUBSCHEMAS = {"items", "prefixItems", "anyOf", "oneOf", "allOf", "not", "if", "then", "else",
               "additionalProperties", "contains"}


def json_lark(schema: dict[str, Any]) -> str:
    """A lark rule body writing JSON valid under ``schema`` (compact, strict)."""
    return f"%json {json.dumps({**strict_schema(schema), 'x-guidance': JSON_OPTIONS})}"


def nested(top: str, grammar: str) -> str:
    """Lark ``top`` with ``grammar`` (any llguidance grammar) as its ``@answer``."""
    return json.dumps({"grammars": [{"lark_grammar": top}, {**_single(grammar), "name": "answer"}]})


def _single(grammar: str) -> dict[str, Any]:
    """One grammar's entry (llguidance's helpers return JSON, or bare lark text)."""
    if grammar.lstrip().startswith("{"):
        (entry,) = json.loads(grammar)["grammars"]
        return entry
    return {"lark_grammar": grammar}
