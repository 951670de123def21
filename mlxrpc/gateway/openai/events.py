"""The chat and completions streams: StreamGenerate messages → OpenAI chunks (relay.EventBuilders)."""

from __future__ import annotations

from typing import Any

from ...v1 import inference_pb2 as pb
from ..http import sse
from ..http.answers import sse_data
from ..http.errors import ApiError, ErrorBody
from ..mcp.translate import McpCallDeltas
from .protocol import (
    ChatCompletionRequest,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
)
from .translate import (
    call_deltas,
    chat_logprobs,
    completion_logprobs,
    echo_logprobs,
    finish_reason,
    prompt_logprobs,
    usage,
    wants_logprobs,
)


def chat_chunk(completion_id: str, created: int, model: str, delta: dict[str, Any],
               finish: str | None = None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
    }


class ChatStream:
    """StreamGenerate messages → chat.completion.chunk payloads, in OpenAI's order:
    a role chunk, content and reasoning deltas, then each tool call as the model
    writes it (a delta with its id, type and name and empty arguments, then its
    arguments piece by piece), and a last chunk with the finish reason (a
    relay.EventBuilder). ``fold_chat`` makes the non-streamed answer of them."""

    done = sse.DONE
    encode = staticmethod(sse.encode)

    def __init__(self, completion_id: str, created: int, body: ChatCompletionRequest,
                 include_usage: bool = False) -> None:
        self.id, self.created, self.model = completion_id, created, body.model
        self.legacy = body.functions is not None
        self.want_logprobs = bool(body.logprobs or body.top_logprobs)
        self.include_usage = include_usage or bool(body.stream_options and body.stream_options.include_usage)
        self.mcp = McpCallDeltas()
        self.calls: set[int] = set()  # indexes of the calls opened so far
        self.input: pb.InputDetails | None = None  # the prompt's details, when asked for

    def _chunk(self, delta: dict[str, Any], finish: str | None = None,
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        return chat_chunk(self.id, self.created, self.model, delta, finish, logprobs)

    def start(self, model: str) -> list[dict]:
        self.model = model
        return [self._chunk({"role": "assistant", "content": ""})]

    def feed(self, message: pb.GenerateStreamResponse) -> list[dict]:
        finish = message.finish if message.HasField("finish") else None
        # Without tool calls the finish reason rides on the last content delta.
        reason = finish_reason(finish) if finish is not None and not finish.tool_calls else None
        chunks = []
        if message.text or message.reasoning or message.logprobs or reason:
            delta: dict[str, Any] = {}
            if message.reasoning:
                delta["reasoning_content"] = message.reasoning
            if message.text or not message.reasoning:
                delta["content"] = message.text
            logprobs = chat_logprobs(list(message.logprobs)) if self.want_logprobs else None
            chunks.append(self._chunk(delta, reason, logprobs))
        if message.HasField("tool_event"):  # an MCP tool the server ran
            chunks.append(self._chunk(self.mcp.delta(message.tool_event)))
        if message.HasField("input"):
            self.input = message.input
        for delta in message.tool_call_deltas:
            chunks += [self._chunk(d) for d in self._call_delta(delta)]
        return chunks

    def _call_delta(self, delta: pb.ToolCallDelta) -> list[dict[str, Any]]:
        if self.legacy and delta.index > 0:  # function_call carries one call
            return []
        out = []
        if delta.index not in self.calls:
            self.calls.add(delta.index)
            out += call_deltas([pb.ToolCall(id=delta.id, name=delta.name)], self.legacy, delta.index)[:1]
        if delta.arguments_delta:
            out.append({"function_call": {"arguments": delta.arguments_delta}} if self.legacy else
                       {"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments_delta}}]})
        return out

    def finish(self, finish: pb.Finish) -> list[dict]:
        chunks = []
        if finish.tool_calls:
            unsent = [c for i, c in enumerate(finish.tool_calls) if i not in self.calls]
            first = len(finish.tool_calls) - len(unsent)
            chunks += [self._chunk(delta) for delta in call_deltas(unsent, self.legacy, first)]
            chunks.append(self._chunk({}, finish_reason(finish, self.legacy)))
        if self.include_usage:
            chunks.append({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": usage(finish.usage).model_dump()})
        return chunks

    def fail(self, error: ApiError) -> list[dict]:
        return [error.body()]


def fold_chat(events: list[dict[str, Any]], stream: ChatStream, body: ChatCompletionRequest) -> dict[str, Any]:
    """The chat.completion a stream's chunks add up to (the non-streamed answer)."""
    content, reasoning, finish, usage_ = "", "", None, None
    calls: dict[int, dict[str, Any]] = {}
    legacy: dict[str, Any] | None = None
    mcp: dict[int, dict[str, Any]] = {}
    tokens: list[dict[str, Any]] = []
    for event in events:
        usage_ = event.get("usage") or usage_
        for choice in event["choices"]:
            delta = choice["delta"]
            content += delta.get("content") or ""
            reasoning += delta.get("reasoning_content") or ""
            for piece in delta.get("tool_calls") or []:
                call = calls.setdefault(piece["index"], {"id": piece.get("id"), "type": "function",
                                                         "function": {"name": "", "arguments": ""}})
                call["function"]["name"] += piece["function"].get("name") or ""
                call["function"]["arguments"] += piece["function"].get("arguments") or ""
            if (piece := delta.get("function_call")) is not None:
                legacy = legacy or {"name": "", "arguments": ""}
                legacy["name"] += piece.get("name") or ""
                legacy["arguments"] += piece.get("arguments") or ""
            for piece in delta.get("mcp_calls") or []:
                entry = mcp.setdefault(piece["index"], {"output": None, "is_error": False})
                entry.update({k: v for k, v in piece.items() if k != "index"})
            if choice.get("logprobs"):
                tokens += choice["logprobs"]["content"]
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls or legacy:
        message["content"] = content or None
        if legacy is not None:
            message["function_call"] = legacy
        else:
            message["tool_calls"] = [calls[i] for i in sorted(calls)]
    if mcp:
        message["mcp_calls"] = [mcp[i] for i in sorted(mcp)]
    out = {
        "id": stream.id,
        "object": "chat.completion",
        "created": stream.created,
        "model": stream.model,
        "choices": [{"index": 0, "message": message,
                     "logprobs": {"content": tokens} if stream.want_logprobs else None,
                     "finish_reason": finish}],
        "usage": usage_,
        "system_fingerprint": None,
    }
    if body.prompt_logprobs is not None:
        out["prompt_logprobs"] = prompt_logprobs(stream.input or pb.InputDetails())
    return out


class CompletionStream:
    """StreamGenerate messages → text_completion chunks; with echo, the prompt
    (from the first message's InputDetails) comes first (a relay.EventBuilder).
    The non-streamed answer is the fold of the chunks of its one message."""

    done = sse.DONE
    encode = staticmethod(sse_data)

    def __init__(self, completion_id: str, created: int, body: CompletionRequest, *,
                 include_usage: bool | None = None) -> None:
        self.id, self.created = completion_id, created
        self.echo, self.want_logprobs = body.echo, wants_logprobs(body)
        self.want_prompt_logprobs = body.prompt_logprobs is not None  # refused with stream=true
        if include_usage is None:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.include_usage = include_usage
        self.offset = 0
        self._head: dict[str, Any] = {}

    def _chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> Completion:
        # Validated from one dict: a single call into pydantic-core per token, the cheapest way to a model.
        if usage is None:  # left unset, so that mid-stream chunks carry no "usage"
            return Completion.model_validate({**self._head, "choices": choices})
        return Completion.model_validate({**self._head, "choices": choices, "usage": usage})

    def start(self, model: str) -> list[Completion]:
        self._head = {"id": self.id, "object": "text_completion", "created": self.created, "model": model}
        return []

    def feed(self, message: pb.GenerateStreamResponse) -> list[Completion]:
        chunks = []
        if self.echo and message.HasField("input"):
            logprobs = echo_logprobs(message.input) if self.want_logprobs else None
            chunks.append(self._chunk([{"index": 0, "text": message.input.text, "logprobs": logprobs,
                                        "finish_reason": None}]))
            self.offset = len(message.input.text)
        finish = finish_reason(message.finish) if message.HasField("finish") else None
        if message.text or finish or message.logprobs:
            logprobs = None
            if self.want_logprobs:
                logprobs = completion_logprobs(list(message.logprobs), self.offset)
            self.offset += len(message.text)
            chunks.append(self._chunk([{"index": 0, "text": message.text, "logprobs": logprobs,
                                        "finish_reason": finish}]))
        if chunks and self.want_prompt_logprobs and message.HasField("input"):
            chunks[0].choices[0].prompt_logprobs = prompt_logprobs(message.input)
        return chunks

    def finish(self, finish: pb.Finish) -> list[Completion]:
        return [self._chunk([], usage(finish.usage))] if self.include_usage else []

    def fail(self, error: ApiError) -> list[ErrorBody]:
        return [error.model()]

    def answer(self, reply: pb.GenerateResponse) -> Completion:
        """The non-streamed answer: the fold of the stream that is the reply as one message."""
        message = pb.GenerateStreamResponse(model=reply.model, text=reply.text, logprobs=reply.logprobs,
                                            finish=reply.finish)
        if reply.HasField("input"):
            message.input.CopyFrom(reply.input)
        return self.fold(self.start(reply.model) + self.feed(message) + self.finish(reply.finish))

    def fold(self, chunks: list[Completion]) -> Completion:
        """One completion from its chunks: texts and logprobs joined, the last finish reason, the usage."""
        choices = [chunk.choices[0] for chunk in chunks if chunk.choices]
        logprobs = [c.logprobs for c in choices if c.logprobs is not None]
        choice = CompletionChoice(
            index=0, text="".join(c.text for c in choices),
            logprobs=CompletionLogprobs(**{field: [x for part in logprobs for x in getattr(part, field)]
                                           for field in CompletionLogprobs.model_fields}) if logprobs else None,
            finish_reason=next((c.finish_reason for c in reversed(choices) if c.finish_reason), None))
        if prompt := next((c.prompt_logprobs for c in choices if c.prompt_logprobs is not None), None):
            choice.prompt_logprobs = prompt
        usages = [chunk.usage for chunk in chunks if chunk.usage is not None]
        return Completion(**self._head, choices=[choice], **({"usage": usages[-1]} if usages else {}))
