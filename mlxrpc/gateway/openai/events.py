"""The chat and completions streams: StreamGenerate messages → OpenAI chunks (relay.EventBuilders)."""

from __future__ import annotations

from typing import Any

from ...v1 import inference_pb2 as pb
from ..http import sse
from ..http.errors import ApiError
from ..mcp.translate import McpCallDeltas
from .protocol import ChatCompletionRequest, CompletionRequest
from .translate import (
    call_deltas,
    chat_logprobs,
    completion_logprobs,
    echo_logprobs,
    finish_reason,
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
    a role chunk, content and reasoning deltas, then the tool calls, one by one,
    and a last chunk with the finish reason (a relay.EventBuilder)."""

    done = sse.DONE
    encode = staticmethod(sse.encode)

    def __init__(self, completion_id: str, created: int, body: ChatCompletionRequest) -> None:
        self.id, self.created, self.model = completion_id, created, body.model
        self.legacy = body.functions is not None
        self.want_logprobs = bool(body.logprobs or body.top_logprobs)
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.mcp = McpCallDeltas()

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
        return chunks

    def finish(self, finish: pb.Finish) -> list[dict]:
        chunks = []
        if finish.tool_calls:
            chunks += [self._chunk(delta) for delta in call_deltas(finish, self.legacy)]
            chunks.append(self._chunk({}, finish_reason(finish, self.legacy)))
        if self.include_usage:
            chunks.append(usage_chunk(self.id, self.created, self.model, "chat.completion.chunk", finish.usage))
        return chunks

    def fail(self, error: ApiError) -> list[dict]:
        return [error.body()]


def completion_chunk(completion_id: str, created: int, model: str, text: str,
                     finish: str | None = None,
                     logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
    }


class CompletionStream:
    """StreamGenerate messages → text_completion chunks; with echo, the prompt
    (from the first message's InputDetails) comes first (a relay.EventBuilder)."""

    done = sse.DONE
    encode = staticmethod(sse.encode)

    def __init__(self, completion_id: str, created: int, body: CompletionRequest) -> None:
        self.id, self.created, self.model = completion_id, created, body.model
        self.echo, self.want_logprobs = body.echo, wants_logprobs(body)
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.offset = 0

    def start(self, model: str) -> list[dict]:
        self.model = model
        return []

    def feed(self, message: pb.GenerateStreamResponse) -> list[dict]:
        chunks = []
        if self.echo and message.HasField("input"):
            logprobs = echo_logprobs(message.input) if self.want_logprobs else None
            chunks.append(completion_chunk(self.id, self.created, self.model, message.input.text,
                                           None, logprobs))
            self.offset = len(message.input.text)
        finish = finish_reason(message.finish) if message.HasField("finish") else None
        if message.text or finish or message.logprobs:
            logprobs = None
            if self.want_logprobs:
                logprobs = completion_logprobs(list(message.logprobs), self.offset)
            self.offset += len(message.text)
            chunks.append(completion_chunk(self.id, self.created, self.model, message.text,
                                           finish, logprobs))
        return chunks

    def finish(self, finish: pb.Finish) -> list[dict]:
        if not self.include_usage:
            return []
        return [usage_chunk(self.id, self.created, self.model, "text_completion", finish.usage)]

    def fail(self, error: ApiError) -> list[dict]:
        return [error.body()]


def usage_chunk(completion_id: str, created: int, model: str, obj: str,
                u: pb.Usage) -> dict[str, Any]:
    return {"id": completion_id, "object": obj, "created": created, "model": model,
            "choices": [], "usage": usage(u)}
