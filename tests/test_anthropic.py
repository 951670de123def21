"""Anthropic's Messages API on the sidecar: the real anthropic SDK against a real
server, and unit tests of the pure translation (request → proto, proto → message/events)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import pytest
from anthropic.types import RawMessageStreamEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import TypeAdapter, ValidationError

from mlxrpc.gateway.anthropic import translate
from mlxrpc.gateway.anthropic.events import MessageStream, fold
from mlxrpc.gateway.anthropic.protocol import CountTokensRequest, MessagesRequest
from mlxrpc.gateway.http.errors import ApiError, from_validation_error
from mlxrpc.v1 import inference_pb2 as pb

from .conftest import Stack

TIME_TOOL = {
    "name": "get_time",
    "description": "The current time in a zone",
    "input_schema": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                     "required": ["zone"], "additionalProperties": False},
}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object",
                     "properties": {"city": {"type": "string", "maxLength": 12},
                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                     "required": ["city", "unit"], "additionalProperties": False},
}
TOOLS = {t["name"]: t for t in (TIME_TOOL, WEATHER_TOOL)}
HELLO = [{"role": "user", "content": "Hello there"}]
GREEDY = {"temperature": 0}  # the SDK dropped temperature from its signature; older ones send it


@pytest.fixture
def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.http_base, api_key="x", max_retries=0)


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, "PNG")
    return buf.getvalue()


# ------------------------------------------------------------------ request → proto


def to_proto(**body: Any) -> pb.GenerateRequest:
    return translate.to_proto(MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 10, "messages": HELLO, **body}), "msg_1")


def test_request_fields_map_onto_the_proto() -> None:
    r = to_proto(system=[{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
                 stop_sequences=["END"], temperature=0.5, top_p=0.9, top_k=5,
                 metadata={"user_id": "u"}, thinking={"type": "enabled", "budget_tokens": 2048},
                 output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert (r.model, r.request_id, r.stopping.max_tokens, list(r.stopping.stop)) == ("m", "msg_1", 10, ["END"])
    assert (r.sampling.temperature, r.sampling.top_k) == (0.5, 5)
    assert r.sampling.top_p == pytest.approx(0.9)
    assert not r.sampling.HasField("seed")
    system, user = r.chat.messages
    assert (system.role, system.content[0].text) == ("system", "Be\n\nbrief.")
    assert (user.role, user.content[0].text) == ("user", "Hello there")
    assert json.loads(r.chat.template_kwargs_json) == {"enable_thinking": True}
    assert json.loads(r.response_format.json_schema.schema_json) == {"type": "object"}
    assert json.loads(to_proto(thinking={"type": "disabled"}).chat.template_kwargs_json) == {
        "enable_thinking": False}
    assert not to_proto().chat.template_kwargs_json
    assert not to_proto().sampling.HasField("temperature")


def test_images_become_image_parts() -> None:
    data = base64.b64encode(b"\x89PNG....").decode()
    r = to_proto(messages=[{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}},
        {"type": "text", "text": "c"}]}])
    parts = r.chat.messages[0].content
    assert [p.WhichOneof("part") for p in parts] == ["text", "image", "image", "text"]
    assert parts[0].text == "a\n\nb"
    assert parts[1].image.data == b"\x89PNG...."
    assert parts[2].image.url == "https://x.test/i.png"
    with pytest.raises(ValidationError) as caught:
        to_proto(messages=[{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]}])
    assert from_validation_error(caught.value).param == "messages[0].content[1].source.data"


@pytest.mark.parametrize(("choice", "expected"), [
    ({"type": "auto"}, ("mode", pb.ToolChoice.MODE_AUTO)),
    ({"type": "any"}, ("mode", pb.ToolChoice.MODE_REQUIRED)),
    ({"type": "none"}, ("mode", pb.ToolChoice.MODE_NONE)),
    ({"type": "tool", "name": "get_time"}, ("function_name", "get_time")),
])
def test_tools_and_tool_choice(choice: dict, expected: tuple[str, Any]) -> None:
    r = to_proto(tools=[TIME_TOOL], tool_choice=choice)
    (tool,) = r.tools
    assert (tool.type, tool.function.name, tool.function.description) == (
        "function", "get_time", "The current time in a zone")
    assert json.loads(tool.function.parameters_json) == TIME_TOOL["input_schema"]
    which = r.tool_choice.WhichOneof("choice")
    assert (which, getattr(r.tool_choice, which)) == expected
    assert r.max_tool_calls == 0
    assert to_proto(tools=[TIME_TOOL], tool_choice={**choice, "disable_parallel_tool_use": True}
                    ).max_tool_calls == 1


def test_tool_history_maps_onto_tool_calls_and_tool_messages() -> None:
    r = to_proto(messages=[
        {"role": "user", "content": "Time and weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"zone": "UTC"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "rain"}, {"type": "text", "text": "cold"}]},
            {"type": "text", "text": "And now?"}]},
        {"role": "user", "content": "Briefly."}])
    roles = [(m.role, m.tool_call_id) for m in r.chat.messages]
    assert roles == [("user", ""), ("assistant", ""), ("tool", "toolu_1"), ("tool", "toolu_2"), ("user", "")]
    assistant = r.chat.messages[1]
    assert [p.text for p in assistant.content] == ["Checking."]
    calls = [(c.id, c.name, json.loads(c.arguments_json)) for c in assistant.tool_calls]
    assert calls == [("toolu_1", "get_time", {"zone": "UTC"}), ("toolu_2", "get_weather", {"city": "Oslo"})]
    assert r.chat.messages[2].content[0].text == "12:00"
    assert r.chat.messages[3].content[0].text == "rain\n\ncold"
    # Consecutive user turns are one turn, as Anthropic combines them.
    assert r.chat.messages[4].content[0].text == "And now?\n\nBriefly."


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": HELLO + [{"role": "assistant", "content": "The answer is ("}]}, "messages[1].role"),
    ({"tools": [TIME_TOOL], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]}, "messages[0].content[0].type"),
    ({"messages": HELLO + [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "t"}]}, *HELLO]}, "messages[1].content[0].type"),
])
def test_requests_the_proto_cannot_carry_are_refused(body: dict, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        to_proto(**body)
    assert (caught.value.status, caught.value.param) == (400, param)


def test_count_tokens_request_carries_the_chat_and_the_tools() -> None:
    body = CountTokensRequest.model_validate({"model": "m", "messages": HELLO, "system": "S",
                                              "tools": [TIME_TOOL]})
    request = translate.count_tokens_request(body)
    assert [m.role for m in request.chat.messages] == ["system", "user"]
    assert [t.function.name for t in request.tools] == ["get_time"]


# ------------------------------------------------------------------ proto → message / events


def reply(**fields: Any) -> pb.GenerateResponse:
    return pb.GenerateResponse(model="m", finish=pb.Finish(
        reason=pb.STOP_REASON_EOS,
        usage=pb.Usage(prompt_tokens=20, completion_tokens=7, cached_tokens=5, reasoning_tokens=3)),
        **fields)


def message_of(r: pb.GenerateResponse, message_id: str) -> dict[str, Any]:
    """The non-streamed message: the fold of the stream of ``r``'s parts."""
    stream = MessageStream(message_id)
    events = stream.start(r.model)
    events += stream.feed(pb.GenerateStreamResponse(reasoning=r.reasoning))
    events += stream.feed(pb.GenerateStreamResponse(text=r.text, finish=r.finish)) + stream.finish(r.finish)
    return fold(events)


def test_message_from_a_reasoning_reply() -> None:
    m = message_of(reply(text="Hi!", reasoning="Greet back."), "msg_1")
    anthropic.types.Message.model_validate(m)
    assert m["content"] == [{"type": "thinking", "thinking": "Greet back.", "signature": ""},
                            {"type": "text", "text": "Hi!"}]
    assert (m["id"], m["type"], m["role"], m["model"]) == ("msg_1", "message", "assistant", "m")
    assert (m["stop_reason"], m["stop_sequence"]) == ("end_turn", None)
    assert m["usage"] == {"input_tokens": 15, "output_tokens": 7, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 5, "output_tokens_details": {"thinking_tokens": 3}}


def test_message_with_tool_calls() -> None:
    r = reply()
    r.finish.reason = pb.STOP_REASON_TOOL_CALLS
    r.finish.tool_calls.add(id="call_1", name="get_time", arguments_json='{"zone": "UTC"}')
    r.finish.tool_calls.add(id="call_2", name="get_time", arguments_json="not json")
    m = message_of(r, "msg_1")
    anthropic.types.Message.model_validate(m)
    assert m["stop_reason"] == "tool_use"
    assert m["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_time", "input": {"zone": "UTC"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]


@pytest.mark.parametrize(("reason", "expected"), [
    (pb.STOP_REASON_LENGTH, ("max_tokens", None)),
    (pb.STOP_REASON_CONTEXT_LENGTH, ("model_context_window_exceeded", None)),
    (pb.STOP_REASON_STOP_SEQUENCE, ("stop_sequence", "END")),
    (pb.STOP_REASON_EOS, ("end_turn", None)),
    (pb.STOP_REASON_STOP_TOKEN, ("end_turn", None)),
])
def test_stop_reasons(reason: int, expected: tuple) -> None:
    assert translate.stop_reason(pb.Finish(reason=reason, stop_sequence="END")) == expected


def test_an_empty_answer_is_one_empty_text_block() -> None:
    assert message_of(reply(), "msg_1")["content"] == [{"type": "text", "text": ""}]


def test_stream_events_thinking_text_and_tool_use() -> None:
    stream = MessageStream("msg_1")
    events = stream.start("m")
    for message in (pb.GenerateStreamResponse(reasoning="Let me "), pb.GenerateStreamResponse(reasoning="think."),
                    pb.GenerateStreamResponse(text="Calling", reasoning=""),
                    pb.GenerateStreamResponse(text=" now.")):
        events += stream.feed(message)
    finish = pb.Finish(reason=pb.STOP_REASON_TOOL_CALLS, usage=pb.Usage(prompt_tokens=9, completion_tokens=4))
    finish.tool_calls.add(id="call_1", name="get_time", arguments_json='{"zone": "UTC"}')
    events += stream.finish(finish)
    adapter = TypeAdapter(RawMessageStreamEvent)
    for event in events:
        if event["type"] != "ping":
            adapter.validate_python(event)  # each has the shape the SDK reads
    kinds = [(e["type"], e.get("index"), (e.get("delta") or e.get("content_block") or {}).get("type"))
             for e in events]
    assert kinds == [
        ("message_start", None, None), ("ping", None, None),
        ("content_block_start", 0, "thinking"), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"), ("content_block_delta", 1, "text_delta"),
        ("content_block_delta", 1, "text_delta"), ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"), ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None), ("message_delta", None, None), ("message_stop", None, None),
    ]
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert json.loads(events[11]["delta"]["partial_json"]) == {"zone": "UTC"}
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"]["input_tokens"] == 9 and events[-2]["usage"]["output_tokens"] == 4


def test_stream_without_output_still_has_a_text_block_and_errors_go_in_band() -> None:
    stream = MessageStream("msg_1")
    events = stream.finish(pb.Finish(reason=pb.STOP_REASON_LENGTH))
    assert [e["type"] for e in events] == ["content_block_start", "content_block_stop",
                                           "message_delta", "message_stop"]
    assert events[2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    (error,) = MessageStream("msg_2").fail(ApiError(500, "boom"))
    assert error == {"type": "error", "error": {"type": "api_error", "message": "boom"}}


@pytest.mark.parametrize(("status", "kind"), [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (409, "invalid_request_error"), (413, "request_too_large"),
    (429, "rate_limit_error"), (500, "api_error"), (501, "api_error"), (503, "overloaded_error"),
])
def test_error_types(status: int, kind: str) -> None:
    assert translate.error_body(ApiError(status, "m"))["error"]["type"] == kind


# ------------------------------------------------------------------ the real SDK against a server


def test_create_message(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="llama", max_tokens=8, messages=HELLO, extra_body=GREEDY,
                               metadata={"user_id": "u1"})
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "llama"
    (block,) = m.content
    assert block.type == "text" and block.text
    assert m.stop_reason in ("max_tokens", "end_turn")
    assert 0 < m.usage.output_tokens <= 8
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) > 0


def test_stream_matches_the_non_streamed_answer(claude: anthropic.Anthropic) -> None:
    args = {"model": "llama", "max_tokens": 12, "messages": HELLO, "system": "Be brief.",
            "extra_body": GREEDY}
    whole = claude.messages.create(**args)
    with claude.messages.stream(**args) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert (final.stop_reason, final.usage.output_tokens) == (whole.stop_reason, whole.usage.output_tokens)
    total = whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
    assert final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) == total

    events = list(claude.messages.create(**args, stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types[1] == "content_block_start" and types[-3] == "content_block_stop"
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == text


def test_raw_stream_uses_named_events_without_done(stack: Stack) -> None:
    body = {"model": "llama", "max_tokens": 3, "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{stack.http_base}/v1/messages", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    frames = [f for f in text.split("\n\n") if f]
    assert all(f.startswith("event: ") and "\ndata: " in f for f in frames)
    assert frames[0].startswith("event: message_start") and frames[-1].startswith("event: message_stop")
    assert "[DONE]" not in text


def test_a_bug_is_an_anthropic_500_before_the_stream_and_an_error_event_after(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    body = {"model": "llama", "max_tokens": 3, "messages": HELLO}
    monkeypatch.setattr(MessageStream, "feed", broken)
    with httpx.stream("POST", f"{stack.http_base}/v1/messages", json={**body, "stream": True}, timeout=60) as r:
        text = "".join(r.iter_text())
    assert text.endswith('event: error\ndata: {"type":"error","error":{"type":"api_error",'
                         '"message":"The server had an error while processing your request."}}\n\n')
    monkeypatch.setattr(translate, "to_proto", broken)
    r = httpx.post(f"{stack.http_base}/v1/messages", json=body, timeout=60)
    assert r.status_code == 500 and r.headers["x-should-retry"] == "false"
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error" and r.json()["request_id"]
    stack.wait_idle()


def test_system_prompt_counts_and_count_tokens_matches_usage(claude: anthropic.Anthropic) -> None:
    plain = claude.messages.count_tokens(model="llama", messages=HELLO).input_tokens
    system = [{"type": "text", "text": "You are a terse assistant."}]
    with_system = claude.messages.count_tokens(model="llama", messages=HELLO, system=system).input_tokens
    assert 0 < plain < with_system
    m = claude.messages.create(model="llama", max_tokens=2, messages=HELLO, system=system)
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == with_system
    with_tools = claude.messages.count_tokens(model="llama", messages=HELLO, system=system,
                                              tools=[TIME_TOOL]).input_tokens
    assert with_tools > with_system
    m = claude.messages.create(model="llama", max_tokens=2, messages=HELLO, system=system, tools=[TIME_TOOL])
    assert m.usage.input_tokens + (m.usage.cache_read_input_tokens or 0) == with_tools  # exact, tools rendered


def test_stop_sequences(claude: anthropic.Anthropic) -> None:
    args = {"model": "llama", "max_tokens": 12, "messages": HELLO, "extra_body": GREEDY}
    text = claude.messages.create(**args).content[0].text
    stop = text[3:5]
    m = claude.messages.create(**args, stop_sequences=[stop])
    assert (m.stop_reason, m.stop_sequence) == ("stop_sequence", stop)
    assert m.content[0].text == text[: text.index(stop)]
    with claude.messages.stream(**args, stop_sequences=[stop]) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


@pytest.mark.parametrize("choice", [{"type": "any"}, {"type": "tool", "name": "get_time"}])
def test_forced_tool_use(claude: anthropic.Anthropic, choice: dict) -> None:
    m = claude.messages.create(model="llama", max_tokens=200, tools=[TIME_TOOL, WEATHER_TOOL],
                               tool_choice=choice, messages=[{"role": "user", "content": "What time is it?"}])
    assert m.stop_reason == "tool_use"
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert use.id and use.name == choice.get("name", use.name)
    jsonschema.validate(use.input, TOOLS[use.name]["input_schema"])


def test_streamed_tool_use(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="llama", max_tokens=200, tools=[WEATHER_TOOL],
                                tool_choice={"type": "any", "disable_parallel_tool_use": True},
                                messages=[{"role": "user", "content": "Weather in Oslo?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (use,) = final.content
    assert use.type == "tool_use" and use.name == "get_weather"
    jsonschema.validate(use.input, WEATHER_TOOL["input_schema"])


def test_tool_result_round_trip(claude: anthropic.Anthropic) -> None:
    ask = [{"role": "user", "content": "What time is it?"}]
    first = claude.messages.create(model="llama", max_tokens=200, tools=[TIME_TOOL],
                                   tool_choice={"type": "any"}, messages=ask)
    (use,) = [b for b in first.content if b.type == "tool_use"]
    history = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": [{"type": "text", "text": "12:00"}]}]}]
    answer = claude.messages.create(model="llama", max_tokens=6, tools=[TIME_TOOL],
                                    tool_choice={"type": "none"}, messages=history)
    assert answer.stop_reason in ("max_tokens", "end_turn")
    assert [b.type for b in answer.content] == ["text"]
    counted = claude.messages.count_tokens(model="llama", messages=history).input_tokens
    assert counted > claude.messages.count_tokens(model="llama", messages=ask).input_tokens


def test_errors_are_anthropic_errors(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="nope", max_tokens=4, messages=HELLO)
    assert missing.value.body["type"] == "error"
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=4, messages=HELLO, stream=True)
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="nope", messages=HELLO)
    bad: list[dict] = [
        {"max_tokens": 0}, {"extra_body": {"temperature": 3}}, {"messages": []},
        {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        {"tool_choice": {"type": "any"}},  # a forced call with no tools
        {"messages": [{"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": base64.b64encode(png((1, 2, 3))).decode()}}]}]},
    ]
    for override in bad:
        with pytest.raises(anthropic.BadRequestError) as caught:
            claude.messages.create(**{"model": "llama", "max_tokens": 4, "messages": HELLO, **override})
        assert caught.value.body["error"]["type"] == "invalid_request_error", override


def test_raw_error_bodies(stack: Stack) -> None:
    r = httpx.post(f"{stack.http_base}/v1/messages", content=b"{not json", timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["request_id"] == r.headers["X-Request-ID"]
    r = httpx.post(f"{stack.http_base}/v1/messages", timeout=30,
                   json={"model": "llama", "messages": HELLO})
    assert (r.status_code, r.json()["error"]["type"]) == (400, "invalid_request_error")
    assert "max_tokens" in r.json()["error"]["message"]


def test_api_key_as_x_api_key_or_bearer(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(api_key=["k"])
    args = {"model": "llama", "max_tokens": 2, "messages": HELLO}
    good = anthropic.Anthropic(base_url=stack.http_base, api_key="k", max_retries=0)
    assert good.messages.create(**args).content
    assert good.messages.count_tokens(model="llama", messages=HELLO).input_tokens > 0
    bearer = anthropic.Anthropic(base_url=stack.http_base, auth_token="k", max_retries=0)
    assert bearer.messages.create(**args, extra_headers={"anthropic-version": "2023-06-01"}).content
    wrong = anthropic.Anthropic(base_url=stack.http_base, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as caught:
        wrong.messages.create(**args)
    assert caught.value.body["error"]["type"] == "authentication_error"
    r = httpx.post(f"{stack.http_base}/v1/messages", json=args, timeout=30)
    assert (r.status_code, r.json()["error"]["type"]) == (401, "authentication_error")


# ChatML whose assistant turn opens a thinking block (DeepSeek-R1 style), closed
# empty when the request turns thinking off (Qwen3's enable_thinking).
THINKING_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def thinking_model(model_dir: Path, dest: Path) -> Path:
    """The demo model with two padding tokens renamed <think> and </think> (so
    mlx-lm sees a thinking vocabulary). Its muted padding rows never write the
    end marker: with thinking on, everything it writes is thinking."""
    shutil.copytree(model_dir, dest)
    tokenizer = json.loads((dest / "tokenizer.json").read_text())
    for token in tokenizer["added_tokens"]:
        names = {"<|extra_0|>": "<think>", "<|extra_1|>": "</think>"}
        if token["content"] in names:
            token.update(content=names[token["content"]], special=False)
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((dest / "tokenizer_config.json").read_text())
    (dest / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": THINKING_TEMPLATE}))
    return dest


def test_thinking_blocks_from_a_reasoning_model(make_stack: Callable[..., Stack], model_dir: Path,
                                                tmp_path: Path) -> None:
    stack = make_stack([f"thinker={thinking_model(model_dir, tmp_path / 'thinker')}"])
    client = anthropic.Anthropic(base_url=stack.http_base, api_key="x", max_retries=0)
    args = {"model": "thinker", "max_tokens": 6, "messages": HELLO, "extra_body": GREEDY}
    m = client.messages.create(**args, thinking={"type": "enabled", "budget_tokens": 1024})
    (block,) = m.content
    assert block.type == "thinking" and block.thinking and block.signature == ""
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens_details.thinking_tokens == m.usage.output_tokens == 6
    with client.messages.stream(**args) as stream:
        deltas = "".join(e.delta.thinking for e in stream
                         if e.type == "content_block_delta" and e.delta.type == "thinking_delta")
        final = stream.get_final_message()
    assert deltas == block.thinking == final.content[0].thinking
    off = client.messages.create(**args, thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"] and off.content[0].text


def test_base64_image_on_a_vision_model(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    from mlxrpc.demo_vision_model import ensure_vision_model

    stack = make_stack([f"vlm={ensure_vision_model(tmp_path / 'vlm')}"])
    client = anthropic.Anthropic(base_url=stack.http_base, api_key="x", max_retries=0)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(png((220, 30, 30))).decode()}}
    m = client.messages.create(model="vlm", max_tokens=4, messages=[
        {"role": "user", "content": [image, {"type": "text", "text": "What color?"}]}])
    assert m.content[0].type == "text" and m.usage.output_tokens > 0


def test_a_failure_after_the_first_byte_is_an_in_band_error(make_stack: Callable[..., Stack]) -> None:
    dying = make_stack()
    client = anthropic.Anthropic(base_url=dying.http_base, api_key="x", max_retries=0)
    events = client.messages.create(model="llama", max_tokens=200, messages=HELLO, stream=True,
                                    extra_body=GREEDY)
    assert next(iter(events)).type == "message_start"
    dying.engine.inject_core_fault(after_tokens=1)
    with pytest.raises(anthropic.APIStatusError) as caught:
        list(events)
    assert caught.value.body["type"] == "error"
    # The engine's death is UNAVAILABLE (503): Anthropic's retryable overloaded_error.
    assert caught.value.body["error"]["type"] == "overloaded_error"
    assert caught.value.body["error"]["message"]


def test_a_client_leaving_mid_stream_stops_its_generation(stack: Stack) -> None:
    """Greedy from HELLO runs to max_tokens (no EOS); a dropped stream ends far sooner."""
    stack.wait_idle()
    before = stack.engine.stats().generated_tokens
    body = {"model": "llama", "max_tokens": 256, "messages": HELLO, "stream": True, **GREEDY}
    with httpx.stream("POST", f"{stack.http_base}/v1/messages", json=body, timeout=60) as r:
        assert next(r.iter_lines()).startswith("event: message_start")
    stack.wait_idle()
    assert stack.engine.stats().generated_tokens - before < 128


ODD_BODIES = [
    {"messages": [{"role": "user", "content": []}]},
    {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": [
        {"type": "tool_use", "id": "a", "name": "b", "input": {}}]}]}]},
    {"system": [{"type": "image", "source": {"type": "url", "url": "http://x.test"}}]},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "missing"}},
    {"thinking": {"type": "enabled", "budget_tokens": 0}},
    {"messages": "hi"},
    {"top_k": -1},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]},
    {"stop_sequences": [""]},
    {"output_config": {"format": {"type": "json_schema", "schema": {"type": "bogus"}}}},
    {"messages": [{"role": "user", "content": "lone surrogate \ud800"}]},
    {"system": "\ud800"},
]


@pytest.mark.parametrize("override", ODD_BODIES)
def test_odd_bodies_get_an_anthropic_400(stack: Stack, override: dict) -> None:
    body = {"model": "llama", "max_tokens": 2, "messages": HELLO, **override}
    r = httpx.post(f"{stack.http_base}/v1/messages", content=json.dumps(body), timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(f"{stack.http_base}/v1/messages/count_tokens", content=json.dumps(body), timeout=30)
    assert r.status_code < 500, r.text


_KEYS = st.sampled_from(["type", "text", "source", "content", "tool_use_id", "input", "name", "id", "data",
                         "url", "media_type", "is_error", "thinking"])
_TAGS = st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "base64", "url", "image/png"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6) | _TAGS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(role=st.sampled_from(["user", "assistant", "system"]), content=_JSON, system=_JSON)
def test_fuzzed_content_never_gets_a_5xx(stack: Stack, role: str, content: Any, system: Any) -> None:
    body = {"model": "llama", "max_tokens": 1, "system": system,
            "messages": [{"role": role, "content": content}, {"role": "user", "content": "x"}]}
    for route in ("/v1/messages", "/v1/messages/count_tokens"):
        r = httpx.post(f"{stack.http_base}{route}", json=body, timeout=30)
        assert r.status_code < 500, r.text
        assert r.status_code == 200 or r.json()["type"] == "error"


def test_every_request_field_is_in_the_docs_table() -> None:
    """docs/api.md's Anthropic table names every request field and only proto fields that exist."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text.split("## Anthropic Messages API\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (.+?) \| (.+?) \|", section, re.M)
    documented = {name.split(".")[0].split("[")[0] for first, _ in rows for name in re.findall(r"`([^`]+)`", first)}
    assert set(MessagesRequest.model_fields) - documented == set()
    for _, proto in rows:
        for path in re.findall(r"`([a-z_.]+)`", proto):
            descriptor = pb.GenerateRequest.DESCRIPTOR
            for part in path.split("."):
                assert descriptor is not None and part in descriptor.fields_by_name, path
                descriptor = descriptor.fields_by_name[part].message_type
