"""Tool calls in model output: held back from the text stream, parsed at the end.

Each family writes calls its own way. The markers and parser come from
mlx-lm where it knows the family (``tokenizer.tool_call_start``,
``tool_call_end``, ``tool_parser``, inferred from the chat template: Qwen3,
Hermes, Mistral, Gemma, ...). Llama 3.1/3.2/3.3, which mlx-lm leaves without
one, answer with a bare JSON object (``{"name": ..., "parameters": ...}``),
optionally after ``<|python_tag|>``: ``LLAMA_JSON`` handles those.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .prompts import template_source
from .stopping import StopStringMatcher
from .types import ToolCall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolFormat:
    """How one family writes a tool call."""

    # The marker opening a call; None: the answer itself is the call (JSON first).
    start: str | None
    end: str | None
    parser: Callable[[str, Any], Any]
    # The markers' token ids (one id: an added token the grammar must name as a token).
    start_tokens: tuple[int, ...] = ()
    end_tokens: tuple[int, ...] = ()
    # Where the arguments go in the JSON a forced call writes.
    arguments_key: str = "arguments"
    # Whether the parser reads {"name", arguments_key} JSON (forced calls are then grammar-written).
    json_body: bool = True


def _parse_llama_json(text: str, tools: Any = None) -> list[dict[str, Any]]:
    """Llama 3.x's calls: JSON objects, one per line or separated by ';'."""
    calls = []
    decoder = json.JSONDecoder()
    rest = text.strip()
    while rest:
        value, end = decoder.raw_decode(rest)
        if isinstance(value, dict) and "arguments" not in value and "parameters" in value:
            value = {**value, "arguments": value["parameters"]}
        calls.append(value)
        rest = rest[end:].lstrip().lstrip(";").lstrip()
    return calls


LLAMA_PYTHON_TAG = "<|python_tag|>"


def tool_format(tokenizer: Any) -> ToolFormat | None:
    """The model's tool-call format, or None if its template has none."""
    if getattr(tokenizer, "has_tool_calling", False) and tokenizer.tool_parser is not None:
        start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
        return ToolFormat(
            start=start, end=end or None, parser=tokenizer.tool_parser,
            start_tokens=tuple(tokenizer.tool_call_start_tokens or ()),
            end_tokens=tuple(tokenizer.tool_call_end_tokens or ()) if end else (),
            json_body=getattr(tokenizer.tool_parser, "__module__", "").endswith("json_tools"),
        )
    # mlx-lm reads only a single template; Hermes' named ones land here.
    template = template_source(tokenizer)
    if "<tool_call>" in template and "tool_call.name" in template:  # mlx-lm's own rule for json_tools
        from mlx_lm.tool_parsers import json_tools

        ids = tuple(tokenizer.encode(json_tools.tool_call_start, add_special_tokens=False))
        end_ids = tuple(tokenizer.encode(json_tools.tool_call_end, add_special_tokens=False))
        return ToolFormat(start=json_tools.tool_call_start, end=json_tools.tool_call_end,
                          parser=json_tools.parse_tool_call, start_tokens=ids, end_tokens=end_ids)
    if LLAMA_PYTHON_TAG in template and "parameters" in template:
        # The tag is no opening marker (a call may start with '{'), but it must reach the parser.
        tag = tuple(tokenizer.encode(LLAMA_PYTHON_TAG, add_special_tokens=False))
        return ToolFormat(start=None, end=None, parser=_parse_llama_json, arguments_key="parameters",
                          start_tokens=tag)
    return None


class ToolCallExtractor:
    """Splits generated answer text into visible content and captured tool-call text."""

    def __init__(self, fmt: ToolFormat, tools: list[dict], max_calls: int = 0) -> None:
        self._fmt = fmt
        self._tools = tools
        self._max_calls = max_calls
        self._marker = StopStringMatcher([fmt.start]) if fmt.start else None
        self._captured: str | None = None
        self._lead = ""  # JSON-first formats: the answer's start, until it decides

    @property
    def captured(self) -> str | None:
        """The tool-call text held back so far (None: no call has started)."""
        return self._captured

    def feed(self, text: str) -> str:
        """Returns the part of ``text`` that is ordinary content."""
        if self._captured is not None:
            self._captured += text
            return ""
        if self._marker is None:
            return self._feed_json_first(text)
        visible, matched = self._marker.feed(text)
        if matched is not None:
            self._captured = matched + self._marker.remainder
        return visible

    def _feed_json_first(self, text: str) -> str:
        """A call is the whole answer when it opens with '{' or the python tag."""
        if self._lead is None:  # decided: plain content
            return text
        self._lead += text
        lead = self._lead.lstrip()
        if not lead:
            return ""
        if lead.startswith(("{", LLAMA_PYTHON_TAG)):
            self._captured, self._lead = self._lead, ""
            return ""
        if LLAMA_PYTHON_TAG.startswith(lead):
            return ""  # maybe the tag, still arriving
        visible, self._lead = self._lead, None  # type: ignore[assignment]
        return visible

    def flush(self) -> str:
        """Content held back as a possible marker start, at the end of output."""
        if self._captured is not None:
            return ""
        if self._marker is None:
            lead, self._lead = self._lead or "", None  # type: ignore[assignment]
            return lead
        return self._marker.flush()

    def calls(self) -> tuple[list[ToolCall], str]:
        """(parsed calls, captured text that did not parse, to show as content)."""
        if self._captured is None:
            return [], ""
        calls: list[ToolCall] = []
        for body in self._bodies():
            try:
                parsed = self._fmt.parser(body, self._tools)
            except Exception as exc:  # model output: anything can come back
                log.info("unparsable tool call (%s): %r", exc, body[:200])
                continue
            for call in parsed if isinstance(parsed, list) else [parsed]:
                if (tool_call := _to_call(call)) is not None:
                    calls.append(tool_call)
        if self._max_calls:
            calls = calls[: self._max_calls]
        return calls, "" if calls else self._captured

    def _bodies(self) -> list[str]:
        captured = self._captured or ""
        if self._fmt.start is None:
            return [captured.strip().removeprefix(LLAMA_PYTHON_TAG)]
        end = self._fmt.end
        return [segment.split(end, 1)[0] if end else segment for segment in captured.split(self._fmt.start)[1:]]


def _to_call(call: Any) -> ToolCall | None:
    """A parser's result as a ToolCall; None unless it names a function."""
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"]:
        log.info("tool call without a function name: %r", str(call)[:200])
        return None
    arguments = call.get("arguments", {})
    try:
        arguments_json = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    call_id = call.get("id")
    return ToolCall(
        id=call_id if isinstance(call_id, str) and call_id else f"call_{uuid.uuid4().hex[:24]}",
        name=call["name"],
        arguments_json=arguments_json,
    )
