"""Tool calls streamed as they are written, for the JSON-bodied formats.

A call written as ``{"name": ..., "arguments": {...}}`` (inside the family's
markers, or bare for Llama) announces itself once its name is known, then
streams its arguments' JSON text as it arrives, holding back only what may
still turn out to be the call's closing brace or end marker. The calls the
stream spelled are the calls the request finishes with, so a stream and its
fold agree, and a call cut off by the token budget keeps what was written.
Formats with other bodies (XML parameters) are announced whole at the end.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

from .tools import LLAMA_PYTHON_TAG, ToolFormat
from .types import ToolCall, ToolCallDelta

_NAME = r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"'
_NAMED = re.compile(_NAME)
_HEADER = re.compile(_NAME + r'\s*,\s*"(?:arguments|parameters)"\s*:\s*')


@dataclass
class _Call:
    id: str
    name: str
    sent: str = ""


def _json_equal(a: str, b: str) -> bool:
    try:
        return json.loads(a) == json.loads(b)
    except ValueError:
        return False


class ToolDeltaStreamer:
    """Follows captured tool-call text and says what is new in each call."""

    def __init__(self, fmt: ToolFormat) -> None:
        self._fmt = fmt
        self._calls: list[_Call] = []

    def _bodies(self, captured: str) -> list[tuple[str, bool]]:
        """Each call's body so far, and whether its end marker has arrived."""
        start, end = self._fmt.start, self._fmt.end
        if start is None:
            return [(captured.lstrip().removeprefix(LLAMA_PYTHON_TAG), False)]
        out = []
        for segment in captured.split(start)[1:]:
            if end and end in segment:
                out.append((segment.split(end, 1)[0], True))
            else:
                out.append((segment, False))
        return out

    def _arguments(self, body: str, closed: bool) -> str:
        """The arguments' text that is certain: less a trailing partial end marker and the call's own '}'."""
        end = self._fmt.end or ""
        if not closed:
            for k in range(min(len(end) - 1, len(body)), 0, -1):
                if body.endswith(end[:k]):
                    body = body[:-k]
                    break
        body = body.rstrip()
        if body.endswith("}"):
            body = body[:-1].rstrip()
        return body

    def feed(self, captured: str | None) -> list[ToolCallDelta]:
        """Deltas for what ``captured`` (all call text so far) adds."""
        if not captured or not self._fmt.json_body:
            return []
        deltas: list[ToolCallDelta] = []
        for index, (body, closed) in enumerate(self._bodies(captured)):
            named = _NAMED.match(body)
            if named is None:
                break
            if index == len(self._calls):
                try:
                    name = json.loads(f'"{named.group(1)}"')
                except ValueError:
                    name = named.group(1)
                self._calls.append(_Call(f"call_{uuid.uuid4().hex[:24]}", name))
                deltas.append(ToolCallDelta(index, self._calls[index].id, name))
            call = self._calls[index]
            header = _HEADER.match(body)
            if header is None:
                continue
            text = self._arguments(body[header.end():], closed)
            if text.startswith(call.sent) and len(text) > len(call.sent):
                deltas.append(ToolCallDelta(index, arguments=text[len(call.sent):]))
                call.sent = text
        return deltas

    def finish(self, captured: str | None, parsed: list[ToolCall], cut: bool) -> tuple[list[ToolCall],
                                                                                       list[ToolCallDelta]]:
        """The calls the request ends with, and the deltas still owed for them.

        Parsed calls keep the streamed spelling of their arguments (the same
        JSON); a call cut off (``cut``) is the text written so far.
        """
        deltas = self.feed(captured)
        if cut:
            bodies = self._bodies(captured or "") if self._fmt.json_body else []
            calls = []
            for call, (body, _) in zip(self._calls, bodies, strict=False):
                header = _HEADER.match(body)
                rest = body[header.end():] if header else ""
                if not rest.startswith(call.sent):
                    rest = call.sent
                if len(rest) > len(call.sent):
                    deltas.append(ToolCallDelta(len(calls), arguments=rest[len(call.sent):]))
                calls.append(ToolCall(call.id, call.name, rest))
            return calls, deltas
        calls = []
        for index, p in enumerate(parsed):
            if index < len(self._calls) and self._calls[index].name == p.name and _json_equal(
                    self._calls[index].sent, p.arguments_json):
                calls.append(ToolCall(self._calls[index].id, p.name, self._calls[index].sent))
                continue
            if index < len(self._calls):  # streamed differently than parsed: say the parsed call's rest
                call = self._calls[index]
                rest = p.arguments_json[len(call.sent):] if p.arguments_json.startswith(call.sent) else ""
                if rest:
                    deltas.append(ToolCallDelta(index, arguments=rest))
                calls.append(ToolCall(call.id, call.name, call.sent + rest))
                continue
            deltas.append(ToolCallDelta(index, p.id, p.name))
            if p.arguments_json:
                deltas.append(ToolCallDelta(index, arguments=p.arguments_json))
            calls.append(p)
        return calls, deltas
