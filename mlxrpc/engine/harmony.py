"""gpt-oss's harmony format: every message a header, then content.

After the prompt's ``<|start|>assistant`` the model writes messages such as::

    <|channel|>analysis<|message|>THOUGHT<|end|>
    <|start|>assistant<|channel|>final<|message|>ANSWER<|return|>
    <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>

(the template renders past calls with ``to=`` before the channel; both are
read). The analysis channel is reasoning, final is the answer, a message
addressed ``to=functions.NAME`` is a tool call whose content is its JSON
arguments. mlx-lm knows none of this, so ``HarmonyReader`` routes the text
(the markers left in it) and ``call_grammar`` / ``answer_grammar`` force the
same shape.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from .lark import json_lark
from .prompts import template_source
from .stopping import StopStringMatcher
from .types import ToolCall, ToolCallDelta

MARKERS = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|constrain|>", "<|call|>", "<|return|>")
_CONTENT_ENDS = ("<|end|>", "<|call|>", "<|return|>")
_RECIPIENT = re.compile(r"to=functions\.([^\s<]+)")


def harmony_tokens(tokenizer: Any) -> dict[str, int] | None:
    """The harmony markers' ids when the chat template speaks harmony, else None."""
    template = template_source(tokenizer)
    if "<|channel|>" not in template or "<|message|>" not in template:
        return None
    vocab = tokenizer.get_vocab()
    if not all(m in vocab for m in MARKERS):
        return None
    return {m: vocab[m] for m in MARKERS}


def _tok(ids: dict[str, int], marker: str) -> str:
    return f"<[{ids[marker]}]>"


def _analysis(ids: dict[str, int]) -> str:
    """An optional analysis message (reasoning), then the next message's start."""
    return (f'analysis: {_tok(ids, "<|channel|>")} "analysis" {_tok(ids, "<|message|>")} /(?s:.*)/ '
            f'{_tok(ids, "<|end|>")} {_tok(ids, "<|start|>")} "assistant"')


def call_grammar(tools: list[dict[str, Any]], ids: dict[str, int]) -> str:
    """Lark for one call to one of ``tools`` on the commentary channel, after optional analysis."""
    rules = [f"start: analysis? {_tok(ids, '<|channel|>')} call", _analysis(ids),
             "call: " + " | ".join(f"f{i}" for i in range(len(tools)))]
    for i, tool in enumerate(tools):
        function = tool["function"]
        header = json.dumps(f"commentary to=functions.{function['name']} ")
        rules.append(f'f{i}: {header} {_tok(ids, "<|constrain|>")} "json" {_tok(ids, "<|message|>")} a{i} '
                     f'{_tok(ids, "<|call|>")}')
        rules.append(f"a{i}: {json_lark(function.get('parameters') or {'type': 'object'})}")
    return "\n".join(rules)


def answer_grammar(grammar: str, ids: dict[str, int]) -> str:
    """``grammar`` as the final channel's content, after optional analysis."""
    from .lark import nested

    top = "\n".join([f'start: analysis? {_tok(ids, "<|channel|>")} "final" {_tok(ids, "<|message|>")} @answer',
                     _analysis(ids)])
    return nested(top, grammar)


@dataclass
class _Message:
    header: str = ""
    kind: str = ""  # "analysis", "final", "call", or "" (other: shown as answer)
    call: int = -1  # index among the calls
    content: str = ""


@dataclass
class HarmonyReader:
    """Splits harmony output into reasoning, answer and tool calls as it streams."""

    tools_enabled: bool
    max_calls: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    _message: _Message = field(default_factory=_Message)
    _in_content: bool = False
    _seen_marker: bool = False
    _ends: StopStringMatcher = field(default_factory=lambda: StopStringMatcher(list(_CONTENT_ENDS)))

    @property
    def in_reasoning(self) -> bool:
        return self._in_content and self._message.kind == "analysis"

    def feed(self, text: str) -> tuple[str, str, list[ToolCallDelta]]:
        """(reasoning, answer, call deltas) in ``text``."""
        reasoning = answer = ""
        deltas: list[ToolCallDelta] = []
        while text:
            if not self._in_content:
                self._message.header += text
                header, sep, rest = self._message.header.partition("<|message|>")
                if not sep:
                    self._seen_marker |= "<|" in header
                    return reasoning, answer, deltas
                self._seen_marker = True
                self._open(header, deltas)
                text = rest
                continue
            emitted, matched = self._ends.feed(text)
            r, a = self._content(emitted, deltas)
            reasoning, answer = reasoning + r, answer + a
            if matched is None:
                break
            text = self._ends.remainder
            self._ends = StopStringMatcher(list(_CONTENT_ENDS))
            self._message, self._in_content = _Message(), False
        return reasoning, answer, deltas

    def _open(self, header: str, deltas: list[ToolCallDelta]) -> None:
        message = self._message
        message.header = header
        recipient = _RECIPIENT.search(header)
        if recipient:
            if not self.tools_enabled or (self.max_calls and len(self.calls) >= self.max_calls):
                message.kind = "ignored"  # no tools offered, or past max_calls
            else:
                message.kind, message.call = "call", len(self.calls)
                call = ToolCall(f"call_{uuid.uuid4().hex[:24]}", recipient.group(1), "")
                self.calls.append(call)
                deltas.append(ToolCallDelta(message.call, call.id, call.name))
        elif "analysis" in header:
            message.kind = "analysis"
        else:
            message.kind = "final" if "final" in header else ""
        self._in_content = True

    def _content(self, text: str, deltas: list[ToolCallDelta]) -> tuple[str, str]:
        if not text:
            return "", ""
        kind = self._message.kind
        if kind == "analysis":
            return text, ""
        if kind == "call":
            self.calls[self._message.call].arguments_json += text
            deltas.append(ToolCallDelta(self._message.call, arguments=text))
            return "", ""
        if kind == "ignored":
            return "", ""
        return "", text

    def flush(self) -> tuple[str, str, list[ToolCallDelta]]:
        """Held-back text at the end; output that never wrote a header is answer text."""
        if not self._in_content:
            header = self._message.header
            return "", ("" if self._seen_marker else header), []
        deltas: list[ToolCallDelta] = []
        r, a = self._content(self._ends.flush(), deltas)
        return r, a, deltas
