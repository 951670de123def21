"""Anthropic's stream events from StreamGenerate messages.

The sequence the anthropic SDKs accumulate: ``message_start``, ``ping``, then
per content block ``content_block_start`` / ``content_block_delta``... /
``content_block_stop``, then ``message_delta`` (stop reason, usage) and
``message_stop``. Thinking and text deltas open a new block whenever the kind
changes; a tool call opens its ``tool_use`` block as soon as its name is
written, and its arguments follow as ``input_json_delta`` pieces as the model
writes them. Usage is only known at the end, so ``message_start`` carries
zeros and ``message_delta`` the totals (the SDKs overwrite the snapshot with
them). ``fold`` makes the non-streamed message of the same events.
"""

from __future__ import annotations

import copy
from typing import Any

from ...v1 import inference_pb2 as pb
from ..http import sse
from ..http.errors import ApiError
from . import translate


class MessageStream:
    """The events of one streamed message, built as the proto messages arrive
    (a relay.EventBuilder: named events, no ``[DONE]``)."""

    done = b""
    encode = staticmethod(sse.encode_named)

    def __init__(self, message_id: str) -> None:
        self._id = message_id
        self._index = -1
        self._open: str | None = None  # the kind of the block being written
        self._calls: set[int] = set()  # the model's calls whose block was opened

    def start(self, model: str) -> list[dict[str, Any]]:
        return [{"type": "message_start", "message": translate.message_shell(self._id, model)},
                {"type": "ping"}]

    def feed(self, message: pb.GenerateStreamResponse) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if message.reasoning:
            events += self._delta("thinking", {"type": "thinking_delta", "thinking": message.reasoning})
        if message.text:
            events += self._delta("text", {"type": "text_delta", "text": message.text})
        for delta in message.tool_call_deltas:
            events += self._call_delta(delta)
        return events

    def _call_delta(self, delta: pb.ToolCallDelta) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if delta.index not in self._calls:
            self._calls.add(delta.index)
            events += self._close()
            events += self._block({"type": "tool_use", "id": delta.id, "name": delta.name, "input": {}})
        if delta.arguments_delta:
            events.append(self._event_delta({"type": "input_json_delta", "partial_json": delta.arguments_delta}))
        return events

    def finish(self, finish: pb.Finish) -> list[dict[str, Any]]:
        events = []
        for i, call in enumerate(finish.tool_calls):
            if i not in self._calls:  # not streamed: whole now
                events += self._call_delta(pb.ToolCallDelta(index=i, id=call.id, name=call.name,
                                                            arguments_delta=call.arguments_json))
        events += self._close()
        if self._index < 0:
            events += self._block({"type": "text", "text": ""}) + self._close()
        reason, sequence = translate.stop_reason(finish)
        return events + [
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
             "usage": translate.usage(finish.usage)},
            {"type": "message_stop"},
        ]

    def fail(self, error: ApiError) -> list[dict[str, Any]]:
        """After the first byte an error can only go in-band; the stream then ends."""
        return [translate.error_body(error)]

    def _delta(self, kind: str, delta: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._open != kind:
            events += self._close()
            first = translate.thinking_block("") if kind == "thinking" else {"type": "text", "text": ""}
            events += self._block(first)
        events.append(self._event_delta(delta))
        return events

    def _block(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self._index += 1
        self._open = block["type"]
        return [{"type": "content_block_start", "index": self._index, "content_block": block}]

    def _event_delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        self._open = None
        return [{"type": "content_block_stop", "index": self._index}]


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streamed message a stream's events add up to (the SDKs' accumulation)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for event in events:
        kind = event["type"]
        if kind == "message_start":
            message = copy.deepcopy(event["message"])
        elif kind == "content_block_start":
            message["content"].append(copy.deepcopy(event["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                partial[event["index"]] = partial.get(event["index"], "") + delta["partial_json"]
        elif kind == "content_block_stop" and event["index"] in partial:
            message["content"][event["index"]]["input"] = translate.tool_input(partial.pop(event["index"]))
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"] = event["usage"]
    return message
