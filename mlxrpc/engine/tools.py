"""Tool calls in model output: held back from the text stream, parsed at the end.

The model's own markers and parser come from mlx-lm (``tokenizer.tool_call_start``,
``tool_call_end``, ``tool_parser``, inferred from the chat template), so every
family mlx-lm knows is handled the same way.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from .stopping import StopStringMatcher
from .types import ToolCall

log = logging.getLogger(__name__)


class ToolCallExtractor:
    """Splits generated text into visible content and captured tool-call text."""

    def __init__(self, start: str, end: str | None, parser: Callable, tools: list[dict]) -> None:
        self._start = start
        self._end = end
        self._parser = parser
        self._tools = tools
        self._marker = StopStringMatcher([start])
        self._captured: str | None = None

    def feed(self, text: str) -> str:
        """Returns the part of ``text`` that is ordinary content."""
        if self._captured is not None:
            self._captured += text
            return ""
        visible, matched = self._marker.feed(text)
        if matched is not None:
            self._captured = matched + self._marker.remainder
        return visible

    def flush(self) -> str:
        """Content held back as a possible marker start, at the end of output."""
        return self._marker.flush() if self._captured is None else ""

    def calls(self) -> tuple[list[ToolCall], str]:
        """(parsed calls, captured text that did not parse, to show as content)."""
        if self._captured is None:
            return [], ""
        calls: list[ToolCall] = []
        for segment in self._captured.split(self._start)[1:]:
            body = segment.split(self._end, 1)[0] if self._end else segment
            try:
                parsed = self._parser(body, self._tools)
            except (ValueError, KeyError, TypeError) as exc:
                log.info("unparsable tool call (%s): %r", exc, body[:200])
                continue
            for call in parsed if isinstance(parsed, list) else [parsed]:
                arguments = call.get("arguments", {})
                calls.append(ToolCall(
                    id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}",
                    name=str(call.get("name", "")),
                    arguments_json=arguments if isinstance(arguments, str)
                    else json.dumps(arguments, ensure_ascii=False),
                ))
        return calls, "" if calls else self._captured


def tool_markers(tokenizer: Any) -> tuple[str, str | None, Callable] | None:
    """The model's tool-call markers and parser, or None if it has no tool format."""
    if not getattr(tokenizer, "has_tool_calling", False) or tokenizer.tool_parser is None:
        return None
    return tokenizer.tool_call_start, tokenizer.tool_call_end, tokenizer.tool_parser
