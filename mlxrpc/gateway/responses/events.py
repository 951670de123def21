"""Pure: StreamGenerate messages → Responses API output items and stream events.

One builder serves both modes: streaming relays the events it returns, and a
non-streamed answer is the fold of the same events (``fold``), so the two
always agree. Output items open in the order things happen (reasoning, text,
server-side tool calls, text again, the model's own function calls as it
writes them: ``output_item.added``, then ``function_call_arguments.delta``
per piece, ``.done`` and ``output_item.done`` at the end).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http import sse
from ..http.errors import ApiError
from .protocol import ResponsesRequest
from .translate import echo_tools, namespaces, split_mcp_name

INCOMPLETE = (pb.STOP_REASON_LENGTH, pb.STOP_REASON_CONTEXT_LENGTH)


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def logprobs(items: list[pb.TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.token_bytes),
         "top_logprobs": [{"token": t.token, "logprob": t.logprob, "bytes": list(t.token_bytes)}
                          for t in lp.top]}
        for lp in items
    ]


def usage(u: pb.Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        # The SDK types require cache_write_tokens; this server does not count writes.
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


class ResponseBuilder:
    """Accumulates one response; every method returns the stream events it caused
    (a relay.EventBuilder: named events, no ``[DONE]``)."""

    done = b""
    encode = staticmethod(sse.encode_named)

    def __init__(self, response_id: str, created_at: int, body: ResponsesRequest,
                 want_logprobs: bool = False) -> None:
        self.id = response_id
        self.created_at = created_at
        self.body = body
        self.model = body.model
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.usage: dict[str, Any] | None = None
        self.incomplete_details: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self._want_logprobs = want_logprobs
        self._open: dict[str, Any] | None = None  # the reasoning or message item being written
        self._calls: dict[str, int] = {}  # MCP call id → output index
        self._functions: dict[int, int] = {}  # the model's call index → output index
        self._namespaced = namespaces(body)
        self._labels = [t.server_label for t in body.tools or [] if t.type == "mcp"]
        self._sequence = 0

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _item_event(self, kind: str, index: int, **fields: Any) -> dict[str, Any]:
        return self._event(kind, item_id=self.output[index]["id"], output_index=index, **fields)

    # ---------------------------------------------------------------- lifecycle

    def start(self, model: str) -> list[dict[str, Any]]:
        self.model = model
        return [self._event("response.created", response=self.snapshot()),
                self._event("response.in_progress", response=self.snapshot())]

    def feed(self, message: pb.GenerateStreamResponse) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if message.reasoning:
            events += self._append("reasoning", message.reasoning, [])
        if message.HasField("tool_event"):
            events += self._tool_event(message.tool_event)
        if message.text:
            events += self._append("message", message.text, list(message.logprobs))
        for delta in message.tool_call_deltas:
            events += self._call_delta(delta)
        return events

    def finish(self, finish: pb.Finish) -> list[dict[str, Any]]:
        incomplete = finish.reason in INCOMPLETE
        self.status = "incomplete" if incomplete else "completed"
        if incomplete:
            self.incomplete_details = {"reason": "max_output_tokens"}
        self.usage = usage(finish.usage)
        events = self._close()
        has_message = any(item["type"] == "message" for item in self.output)
        if not has_message and not finish.tool_calls and not self._functions:
            events += self._open_item("message")
            events += self._close()
        for i, call in enumerate(finish.tool_calls):
            if i not in self._functions:  # not streamed: whole now
                events += self._call_delta(pb.ToolCallDelta(index=i, id=call.id, name=call.name,
                                                            arguments_delta=call.arguments_json))
        for index in self._functions.values():
            events += self._close_call(index)
        kind = "response.incomplete" if incomplete else "response.completed"
        return events + [self._event(kind, response=self.snapshot())]

    def fail(self, error: ApiError) -> list[dict[str, Any]]:
        """An error after the stream began: an ``error`` event, then ``response.failed``."""
        self.status = "failed"
        # The SDK types allow only OpenAI's own codes here; the error event carries ours.
        code = "rate_limit_exceeded" if error.status == 429 else "server_error"
        self.error = {"code": code, "message": error.message}
        return [self._event("error", code=error.code, message=error.message, param=error.param),
                self._event("response.failed", response=self.snapshot())]

    # ---------------------------------------------------------------- items

    def _open_item(self, kind: str) -> list[dict[str, Any]]:
        if kind == "reasoning":
            item = {"id": _id("rs"), "type": "reasoning", "summary": [], "content": [], "status": "in_progress"}
            part: dict[str, Any] = {"type": "reasoning_text", "text": ""}
        else:
            item = {"id": _id("msg"), "type": "message", "role": "assistant", "status": "in_progress",
                    "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            if self._want_logprobs:
                part["logprobs"] = []
        self.output.append(item)
        self._open = item
        index = len(self.output) - 1
        events = [self._event("response.output_item.added", output_index=index, item=dict(item)),
                  self._item_event("response.content_part.added", index, content_index=0, part=dict(part))]
        item["content"] = [part]
        return events

    def _append(self, kind: str, text: str, lps: list[pb.TokenLogprob]) -> list[dict[str, Any]]:
        events = []
        if self._open is None or self._open["type"] != kind:
            events += self._close()
            events += self._open_item(kind)
        part = self._open["content"][0]  # type: ignore[index]
        part["text"] += text
        index = len(self.output) - 1
        if kind == "reasoning":
            return events + [self._item_event("response.reasoning_text.delta", index, content_index=0,
                                              delta=text)]
        delta_logprobs = logprobs(lps) if self._want_logprobs else []
        if self._want_logprobs:
            part["logprobs"] += delta_logprobs
        return events + [self._item_event("response.output_text.delta", index, content_index=0,
                                          delta=text, logprobs=delta_logprobs)]

    def _close(self) -> list[dict[str, Any]]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = self.output.index(item)
        item["status"] = "incomplete" if self.status == "incomplete" else "completed"
        part = item["content"][0]
        if item["type"] == "reasoning":
            done = self._item_event("response.reasoning_text.done", index, content_index=0, text=part["text"])
        else:
            done = self._item_event("response.output_text.done", index, content_index=0, text=part["text"],
                                    logprobs=part.get("logprobs", []))
        return [done,
                self._item_event("response.content_part.done", index, content_index=0, part=dict(part)),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _call_delta(self, delta: pb.ToolCallDelta) -> list[dict[str, Any]]:
        """A piece of one of the model's calls: the first opens its item, arguments stream."""
        events = []
        if delta.index not in self._functions:
            events += self._close()
            namespace, name = self._namespaced.get(delta.name, ("", delta.name))
            item = {"id": _id("fc"), "type": "function_call", "call_id": delta.id or _id("call"),
                    "name": name or delta.name, "arguments": "", "status": "in_progress"}
            if namespace and name:
                item["namespace"] = namespace
            self.output.append(item)
            self._functions[delta.index] = index = len(self.output) - 1
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        index = self._functions[delta.index]
        if delta.arguments_delta:
            self.output[index]["arguments"] += delta.arguments_delta
            events.append(self._item_event("response.function_call_arguments.delta", index,
                                           delta=delta.arguments_delta))
        return events

    def _close_call(self, index: int) -> list[dict[str, Any]]:
        item = self.output[index]
        item["status"] = "incomplete" if self.status == "incomplete" else "completed"
        return [self._item_event("response.function_call_arguments.done", index, name=item["name"],
                                 arguments=item["arguments"]),
                self._event("response.output_item.done", output_index=index, item=dict(item))]

    def _tool_event(self, event: pb.ToolEvent) -> list[dict[str, Any]]:
        if event.HasField("call"):
            call = event.call
            label, name = split_mcp_name(call.name, self._labels)
            item = {"id": f"mcp_{call.id or uuid.uuid4().hex}", "type": "mcp_call", "server_label": label,
                    "name": name, "arguments": call.arguments_json, "output": None, "error": None,
                    "status": "in_progress"}
            events = self._close()
            self.output.append(item)
            index = len(self.output) - 1
            self._calls[call.id] = index
            return events + [
                self._event("response.output_item.added", output_index=index, item=dict(item)),
                self._item_event("response.mcp_call.in_progress", index),
                self._item_event("response.mcp_call_arguments.delta", index, delta=call.arguments_json),
                self._item_event("response.mcp_call_arguments.done", index, arguments=call.arguments_json),
            ]
        if event.HasField("result"):
            result = event.result
            index = self._calls.pop(result.call_id, None)
            if index is None:  # a result without its call: nothing to attach it to
                return []
            item = self.output[index]
            if result.is_error:
                item.update(status="failed", error={"type": "mcp_tool_execution_error",
                                                    "content": result.content})
            else:
                item.update(status="completed", output=result.content)
            kind = "response.mcp_call.failed" if result.is_error else "response.mcp_call.completed"
            return [self._item_event(kind, index),
                    self._event("response.output_item.done", output_index=index, item=item)]
        return []

    # ---------------------------------------------------------------- the object

    def snapshot(self) -> dict[str, Any]:
        """The object as it is now, safe from later changes (events are encoded later)."""
        return copy.deepcopy(self.response())

    def response(self) -> dict[str, Any]:
        body = self.body
        fmt = body.text.format if body.text is not None and body.text.format is not None else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": False,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "model": self.model,
            "output": self.output,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "reasoning": {"effort": body.reasoning.effort if body.reasoning else None,
                          "summary": body.reasoning.summary if body.reasoning else None},
            "store": body.store,
            "temperature": body.temperature,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
            "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
            "tools": echo_tools(body),
            "top_p": body.top_p,
            "truncation": body.truncation or "disabled",
            "usage": self.usage,
            "user": body.user,
            "metadata": body.metadata or {},
        }


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A non-streamed Response: what the stream's events leave (its last lifecycle event's object)."""
    final = [e for e in events if e["type"] in ("response.completed", "response.incomplete")]
    return final[-1]["response"]
