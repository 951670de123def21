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
from dataclasses import dataclass
from typing import Any

from .harmony import call_grammar, harmony_tokens
from .prompts import template_source
from .stopping import StopStringMatcher
from .tool_format import ToolFormat
from .tool_gemma import gemma_native
from .tool_header import (
    ARGS,
    CALL_ID,
    DEEPSEEK_SEP,
    KIMI_ARGS,
    header_call_grammar,
    read_deepseek_call,
    read_kimi_call,
    read_mistral_call,
)
from .tool_json import json_call_grammar, read_json_call, split_json_objects
from .tool_xml import (
    GLM_TAGS,
    glm_call_grammar,
    minimax_call_grammar,
    read_glm_call,
    read_minimax_call,
    read_xml_call,
    xml_call_grammar,
)
from .types import ToolCall, ToolCallDelta

log = logging.getLogger(__name__)


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
    if (ids := harmony_tokens(tokenizer)) is not None:
        return ToolFormat(start="<|channel|>", end="<|call|>", parser=_unused_parser, harmony=ids,
                          grammar=lambda tools, fmt, added_ids: call_grammar(tools, ids))
    if (header := _header_format(tokenizer)) is not None:
        return header
    if getattr(tokenizer, "has_tool_calling", False) and tokenizer.tool_parser is not None:
        start, end = tokenizer.tool_call_start, tokenizer.tool_call_end
        return ToolFormat(
            start=start, end=end or None, parser=tokenizer.tool_parser,
            start_tokens=tuple(tokenizer.tool_call_start_tokens or ()),
            end_tokens=tuple(tokenizer.tool_call_end_tokens or ()) if end else (),
            **_native(getattr(tokenizer.tool_parser, "__module__", "").rsplit(".", 1)[-1], tokenizer),
        )
    # mlx-lm reads only a single template; Hermes' named ones land here.
    template = template_source(tokenizer)
    if "<tool_call>" in template and "tool_call.name" in template:  # mlx-lm's own rule for json_tools
        from mlx_lm.tool_parsers import json_tools

        ids = tuple(tokenizer.encode(json_tools.tool_call_start, add_special_tokens=False))
        end_ids = tuple(tokenizer.encode(json_tools.tool_call_end, add_special_tokens=False))
        return ToolFormat(start=json_tools.tool_call_start, end=json_tools.tool_call_end,
                          parser=json_tools.parse_tool_call, start_tokens=ids, end_tokens=end_ids,
                          **_native("json_tools"))
    if LLAMA_PYTHON_TAG in template and "parameters" in template:
        # The tag is no opening marker (a call may start with '{'), but it must reach the parser.
        tag = tuple(tokenizer.encode(LLAMA_PYTHON_TAG, add_special_tokens=False))
        return ToolFormat(start=None, end=None, parser=_parse_llama_json, arguments_key="parameters",
                          start_tokens=tag, grammar=json_call_grammar,
                          reader=lambda body, tools: read_json_call(body, ("parameters", "arguments")))
    return None


_KIMI = ("<|tool_calls_section_begin|>", "<|tool_call_begin|>", KIMI_ARGS, "<|tool_call_end|>",
         "<|tool_calls_section_end|>")
_DEEPSEEK = ("<\uff5ctool\u2581calls\u2581begin\uff5c>", "<\uff5ctool\u2581call\u2581begin\uff5c>", DEEPSEEK_SEP,
             "<\uff5ctool\u2581call\u2581end\uff5c>", "<\uff5ctool\u2581calls\u2581end\uff5c>")


def _header_format(tokenizer: Any) -> ToolFormat | None:
    """Kimi-K2's and DeepSeek-V3.1's calls (one call per begin/end pair), read here:
    mlx-lm reads Kimi's whole section at the end and knows no DeepSeek format."""
    template = template_source(tokenizer)
    vocab = tokenizer.get_vocab()
    for markers, reader, name_format in ((_KIMI, read_kimi_call, "functions.{name}:0"),
                                         (_DEEPSEEK, read_deepseek_call, "{name}")):
        if markers[1] not in template or not all(m in vocab for m in markers):
            continue
        section, opening, separator, closing, section_end = (vocab[m] for m in markers)
        return ToolFormat(
            start=markers[1], end=markers[3], parser=_unused_parser, start_tokens=(opening,),
            end_tokens=(closing,), extra_tokens=(separator,), grammar=header_call_grammar, reader=reader,
            tokens={"section": section, "open": opening, "separator": separator, "close": closing,
                    "section_end": section_end},
            name_format=name_format)
    return None


def _unused_parser(text: str, tools: Any) -> Any:
    raise ValueError("this format's calls are read as they are written (ToolFormat.reader)")


def _native(parser_module: str, tokenizer: Any = None) -> dict[str, Any]:
    """The forced-call grammar and streaming reader of an mlx-lm tool parser's format."""
    if parser_module == "mistral" and tokenizer is not None:
        vocab = tokenizer.get_vocab()
        if ARGS not in vocab:
            return {}  # the older [{"name", "arguments"}] list: parsed whole
        extra = (vocab[ARGS], *([vocab[CALL_ID]] if CALL_ID in vocab else []))
        return {"grammar": header_call_grammar, "reader": read_mistral_call, "extra_tokens": extra,
                "tokens": {"open": vocab["[TOOL_CALLS]"], "separator": vocab[ARGS]}}
    if parser_module == "json_tools":
        return {"grammar": json_call_grammar,
                "reader": lambda body, tools: read_json_call(body, ("arguments", "parameters"))}
    if parser_module == "qwen3_coder":
        return {"grammar": xml_call_grammar, "reader": read_xml_call}
    if parser_module == "minimax_m2":
        return {"grammar": minimax_call_grammar, "reader": read_minimax_call}
    if parser_module == "glm47" and tokenizer is not None:
        vocab = tokenizer.get_vocab()
        tags = {tag: vocab[tag] for tag in GLM_TAGS if tag in vocab}
        return {"grammar": glm_call_grammar, "reader": read_glm_call, "tokens": tags,
                "extra_tokens": tuple(tags.values()), "end_in_body": True}
    if parser_module == "gemma4":
        return gemma_native(tokenizer)
    return {}


@dataclass
class _Streamed:
    """A call as far as its deltas went out."""

    id: str
    name: str
    sent: str = ""


class ToolCallExtractor:
    """Splits generated answer text into visible content and tool calls, and
    streams the calls (``deltas``) as they are written."""

    def __init__(self, fmt: ToolFormat, tools: list[dict], max_calls: int = 0) -> None:
        self._fmt = fmt
        self._tools = tools
        self._max_calls = max_calls
        self._marker = StopStringMatcher([fmt.start]) if fmt.start else None
        self._captured: str | None = None
        self._lead = ""  # JSON-first formats: the answer's start, until it decides
        self._streamed: list[_Streamed] = []

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

    def deltas(self) -> list[ToolCallDelta]:
        """What the calls gained since the last look: a new call's id and name
        once its name is written, then its argument text as it grows."""
        if self._captured is None or self._fmt.reader is None:
            return []
        out: list[ToolCallDelta] = []
        for index, body in enumerate(self._bodies()):
            if self._max_calls and index >= self._max_calls:
                break
            name, arguments, _ = self._fmt.reader(body, self._tools)
            if not name:
                break
            if index == len(self._streamed):
                self._streamed.append(_Streamed(f"call_{uuid.uuid4().hex[:24]}", name))
                out.append(ToolCallDelta(index, self._streamed[index].id, name))
            call = self._streamed[index]
            if len(arguments) > len(call.sent) and arguments.startswith(call.sent):
                out.append(ToolCallDelta(index, arguments=arguments[len(call.sent):]))
                call.sent = arguments
        return out

    def finish(self, cut: bool) -> tuple[list[ToolCall], str, list[ToolCallDelta]]:
        """At the end of output: (the calls, text to show as content, the last deltas).

        The calls are the fold of their deltas, so a call cut off by the token
        budget (``cut``) keeps what was written. Captured text with no call in
        it shows as content, unless cut off (then it is half a call: dropped,
        as is a marker's start held back).
        """
        held = self.flush()
        if self._captured is None:
            return [], "" if cut else held, []  # cut mid-marker: half a marker
        deltas = self.deltas()
        if not self._streamed and not cut:
            deltas += self._parsed_deltas()
        calls = [ToolCall(c.id, c.name, c.sent) for c in self._streamed]
        if calls or cut:
            return calls, "", deltas
        return [], self._captured, deltas

    def _parsed_deltas(self) -> list[ToolCallDelta]:
        """Calls of a format without a reader, parsed whole: one delta each."""
        out = []
        for body in self._bodies():
            if self._fmt.end_in_body and self._fmt.end:
                body = body.removesuffix(self._fmt.end)  # mlx-lm's parsers take the call without it
            try:
                parsed = self._fmt.parser(body, self._tools)
            except Exception as exc:  # model output: anything can come back
                log.info("unparsable tool call (%s): %r", exc, body[:200])
                continue
            for call in parsed if isinstance(parsed, list) else [parsed]:
                if (tool_call := _to_call(call)) is None:
                    continue
                if self._max_calls and len(self._streamed) >= self._max_calls:
                    return out
                index = len(self._streamed)
                self._streamed.append(_Streamed(tool_call.id, tool_call.name, tool_call.arguments_json))
                out.append(ToolCallDelta(index, tool_call.id, tool_call.name, tool_call.arguments_json))
        return out

    def _bodies(self) -> list[str]:
        captured = self._captured or ""
        if self._fmt.start is None:
            body = captured.strip().removeprefix(LLAMA_PYTHON_TAG)
            return split_json_objects(body) if self._fmt.reader is not None else [body]
        end = self._fmt.end
        if not end:
            return captured.split(self._fmt.start)[1:]
        keep = end if self._fmt.end_in_body else ""
        return [body + (keep if closed else "") for body, closed, _ in
                (segment.partition(end) for segment in captured.split(self._fmt.start)[1:])]


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
