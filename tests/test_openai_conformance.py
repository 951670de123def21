"""OpenAI conformance of the REST sidecar: every answer and stream chunk parses
with the openai SDK's own typed models (validated, not constructed), error
bodies carry OpenAI's types and codes, and odd or out-of-range input is a 400
naming the field. Mapping of fields the engine may not honour yet is checked
on gateway/openai/translate.py directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import requests
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from mlxrpc.gateway.http.errors import from_rpc_error
from mlxrpc.gateway.openai import translate
from mlxrpc.gateway.openai.events import ChatStream, CompletionStream, fold_chat
from mlxrpc.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest
from mlxrpc.v1 import inference_pb2 as pb

from .conftest import Stack

HELLO = [{"role": "user", "content": "Hello!"}]
WEATHER = {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"],
    "additionalProperties": False}}


def post(stack: Stack, path: str, body: Any, **kwargs: Any) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{stack.http_base}{path}", data=data, timeout=60,
                         headers={"Content-Type": "application/json"}, **kwargs)


def completion_chunk(payload: dict) -> Completion:
    """A completion stream chunk as the SDK's Completion, whose finish_reason is
    not nullable although OpenAI itself streams null until the last chunk."""
    choices = [{**c, "finish_reason": c["finish_reason"] or "length"} for c in payload["choices"]]
    return Completion.model_validate({**payload, "choices": choices})


def events(r: requests.Response) -> list[Any]:
    """The JSON payloads of an SSE answer; asserts it ends with [DONE]."""
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    data = [line[len("data: "):] for line in r.text.split("\n\n") if line]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


# ------------------------------------------------------------- typed answers


def test_chat_answers_and_chunks_validate_as_the_sdk_types(stack: Stack) -> None:
    body = {"model": "default", "messages": HELLO, "max_tokens": 6, "temperature": 0,
            "logprobs": True, "top_logprobs": 2}
    whole = ChatCompletion.model_validate(post(stack, "/v1/chat/completions", body).json())
    assert whole.usage.completion_tokens_details.reasoning_tokens == 0
    assert whole.choices[0].message.content and whole.choices[0].finish_reason == "length"
    chunks = [ChatCompletionChunk.model_validate(p) for p in events(post(
        stack, "/v1/chat/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}))]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6


def test_completion_answers_and_chunks_validate_as_the_sdk_types(stack: Stack) -> None:
    body = {"model": "default", "prompt": "Once upon", "max_tokens": 5, "temperature": 0, "logprobs": 1}
    whole = Completion.model_validate(post(stack, "/v1/completions", body).json())
    assert len(whole.choices[0].logprobs.tokens) == 5
    chunks = [completion_chunk(p) for p in events(post(
        stack, "/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}}))]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    no_logprobs = post(stack, "/v1/completions", {**body, "logprobs": False}).json()
    assert no_logprobs["choices"][0]["logprobs"] is None


def test_tool_calls_and_legacy_function_calls_validate(stack: Stack) -> None:
    tools = {"tools": [{"type": "function", "function": WEATHER}], "tool_choice": "required",
             "parallel_tool_calls": False}
    body = {"model": "default", "messages": HELLO, "max_tokens": 200, **tools}
    r = ChatCompletion.model_validate(post(stack, "/v1/chat/completions", body).json())
    (call,) = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    legacy = {"model": "default", "messages": HELLO, "max_tokens": 200, "functions": [WEATHER],
              "function_call": {"name": "get_weather"}}
    r = ChatCompletion.model_validate(post(stack, "/v1/chat/completions", legacy).json())
    message = r.choices[0].message
    assert r.choices[0].finish_reason == "function_call" and message.tool_calls is None
    assert message.function_call.name == "get_weather"
    assert json.loads(message.function_call.arguments)["city"] in ("Paris", "Rome")
    chunks = [ChatCompletionChunk.model_validate(p) for p in events(post(
        stack, "/v1/chat/completions", {**legacy, "stream": True}))]
    # As OpenAI streams it: the name with empty arguments, the arguments as written, an empty final delta.
    opened, *args = [c.choices[0].delta.function_call for c in chunks
                     if c.choices and c.choices[0].delta.function_call]
    assert (opened.name, opened.arguments) == ("get_weather", "")
    assert len(args) >= 3 and all(a.name is None for a in args)
    assert json.loads("".join(a.arguments for a in args))["city"] in ("Paris", "Rome")
    assert chunks[-1].choices[0].finish_reason == "function_call"
    assert chunks[-1].choices[0].delta.model_dump(exclude_none=True) == {}
    # The answer of a function goes back as role "function" (a tool message).
    history = [*HELLO, {"role": "assistant", "content": None, "function_call": {
        "name": "get_weather", "arguments": '{"city": "Rome"}'}},
        {"role": "function", "name": "get_weather", "content": "sunny"}]
    r = post(stack, "/v1/chat/completions", {"model": "default", "messages": history, "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_streamed_tool_calls_accumulate_in_the_sdks_stream_state() -> None:
    """Per call: a delta with id, type and name (arguments ""), then the arguments;
    the finish reason in a last, empty delta; the SDK's accumulator rebuilds both calls."""
    finish = pb.Finish(reason=pb.STOP_REASON_TOOL_CALLS, usage=pb.Usage(prompt_tokens=2, completion_tokens=9))
    finish.tool_calls.add(id="call_a", name="get_weather", arguments_json='{"city": "Rome"}')
    finish.tool_calls.add(id="call_b", name="get_time", arguments_json='{"zone": "UTC"}')
    body = ChatCompletionRequest(messages=HELLO, stream=True, stream_options={"include_usage": True})
    stream = ChatStream("chatcmpl-1", 0, body)
    payloads = stream.start("m") + stream.feed(pb.GenerateStreamResponse(text="", finish=finish))
    payloads += stream.finish(finish)
    chunks = [ChatCompletionChunk.model_validate(p) for p in payloads]
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert [(d.index, d.id, d.function.name, d.function.arguments) for d in deltas] == [
        (0, "call_a", "get_weather", ""), (0, None, None, '{"city": "Rome"}'),
        (1, "call_b", "get_time", ""), (1, None, None, '{"zone": "UTC"}')]
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and chunks[-2].choices[0].delta.tool_calls is None
    assert chunks[-1].usage.completion_tokens == 9
    state = ChatCompletionStreamState()
    for chunk in chunks:
        list(state.handle_chunk(chunk))
    final = state.get_final_completion().choices[0]
    assert final.finish_reason == "tool_calls"
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in final.message.tool_calls] == [
        ("call_a", "get_weather", {"city": "Rome"}), ("call_b", "get_time", {"zone": "UTC"})]


def test_the_sdks_stream_helper_builds_the_tool_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
            model="default", messages=HELLO, max_tokens=200, tool_choice="required",
            tools=[{"type": "function", "function": WEATHER}]) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_completion()
    assert {"tool_calls.function.arguments.delta", "tool_calls.function.arguments.done"} <= kinds
    (call,) = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    assert call.id and json.loads(call.function.arguments)["city"] in ("Paris", "Rome")


def test_guided_choice_and_regex_constrain_the_output(stack: Stack) -> None:
    r = post(stack, "/v1/chat/completions", {"model": "default", "messages": HELLO, "max_tokens": 20,
                                              "guided_choice": ["yes", "no"]})
    assert ChatCompletion.model_validate(r.json()).choices[0].message.content in ("yes", "no")
    r = post(stack, "/v1/completions", {"model": "default", "prompt": "Year:", "max_tokens": 20,
                                         "guided_regex": "[0-9]{4}"})
    text = Completion.model_validate(r.json()).choices[0].text
    assert len(text) == 4 and text.isdigit()


def test_prompt_logprobs_in_vllms_shape(stack: Stack) -> None:
    r = post(stack, "/v1/completions", {"model": "default", "prompt": "The capital of France is",
                                         "max_tokens": 2, "prompt_logprobs": 1}).json()
    completion = Completion.model_validate(r)
    prompt = r["choices"][0]["prompt_logprobs"]
    assert prompt[0] is None and len(prompt) == completion.usage.prompt_tokens
    for entry in prompt[1:]:
        assert 1 <= len(entry) <= 2
        assert all(isinstance(v["logprob"], float) and isinstance(v["decoded_token"], str)
                   for v in entry.values())
    r = post(stack, "/v1/completions", {"model": "default", "prompt": "Hi", "max_tokens": 2,
                                         "prompt_logprobs": 1, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt_logprobs"


def test_streamed_echo_with_logprobs_leads_with_the_prompt(stack: Stack) -> None:
    prompt = "The capital of France is"
    chunks = events(post(stack, "/v1/completions", {"model": "default", "prompt": prompt,
                                                     "max_tokens": 3, "echo": True, "logprobs": 1,
                                                     "stream": True}))
    assert chunks[0]["choices"][0]["text"] == prompt
    head = chunks[0]["choices"][0]["logprobs"]
    assert head["token_logprobs"][0] is None and "".join(head["tokens"]) == prompt
    assert sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks[1:]) == 3


def test_reasoning_content_from_a_thinking_model(make_stack: Callable[..., Stack], model_dir: Path,
                                                 tmp_path: Path) -> None:
    from .test_anthropic import thinking_model  # the demo model with a thinking vocabulary

    stack = make_stack([f"thinker={thinking_model(model_dir, tmp_path / 'thinker')}"])
    body = {"model": "thinker", "messages": HELLO, "max_tokens": 5, "temperature": 0}
    r = ChatCompletion.model_validate(post(stack, "/v1/chat/completions", body).json())
    thought = r.model_extra or {}
    message = r.choices[0].message
    assert message.model_extra["reasoning_content"] and not message.content, thought
    assert r.usage.completion_tokens_details.reasoning_tokens == 5
    chunks = [ChatCompletionChunk.model_validate(p) for p in events(post(
        stack, "/v1/chat/completions", {**body, "stream": True}))]
    streamed = "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
                       for c in chunks if c.choices)
    assert streamed == message.model_extra["reasoning_content"]


# ------------------------------------------------------------------- errors


def error_of(r: requests.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


def test_unknown_model_and_context_overflow_use_openais_codes(stack: Stack) -> None:
    error = error_of(post(stack, "/v1/chat/completions", {"model": "missing", "messages": HELLO}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    long = [{"role": "user", "content": "word " * 400}]
    error = error_of(post(stack, "/v1/chat/completions", {"model": "qwen", "messages": long}), 400)
    assert error["code"] == "context_length_exceeded"
    assert "maximum context length" in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="qwen", messages=long)
    assert caught.value.code == "context_length_exceeded"


def test_http_level_refusals_are_openai_errors(stack: Stack) -> None:
    r = requests.get(f"{stack.http_base}/v1/chat/completions", timeout=10)
    assert error_of(r, 405)["code"] == "method_not_allowed" and r.headers["Allow"] == "POST"
    error = error_of(requests.get(f"{stack.http_base}/v1/nothing", timeout=10), 404)
    assert error["message"] == "Invalid URL (GET /v1/nothing)"
    assert error_of(post(stack, "/v1/completions", b'{"prompt": NaN}'), 400)["code"] == "invalid_json"


def test_deep_json_and_loosely_typed_values_are_400s(stack: Stack) -> None:
    deep = {"messages": HELLO, "chat_template_kwargs": json.loads("[" * 500 + "]" * 500)}
    assert error_of(post(stack, "/v1/chat/completions", deep), 400)["code"] == "invalid_json"
    for field, value in [("min_p", False), ("temperature", "0.5"), ("max_tokens", 2.0), ("stream", "yes")]:
        error = error_of(post(stack, "/v1/chat/completions", {"messages": HELLO, field: value}), 400)
        assert error["param"] == field


def test_a_bug_in_a_handler_is_a_json_500_that_is_not_retried(stack: Stack,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(translate, "chat_to_proto", broken)
    r = post(stack, "/v1/chat/completions", {"messages": HELLO})
    assert error_of(r, 500)["code"] == "server_error" and "a bug" not in r.text
    assert r.headers["x-should-retry"] == "false"


def test_a_bug_mid_stream_ends_the_stream_with_an_error_event(stack: Stack,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ChatStream, "feed", broken)
    payloads = events(post(stack, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 3,
                                                            "stream": True}))
    assert payloads[-1]["error"]["type"] == "server_error" and "a bug" not in json.dumps(payloads)
    stack.wait_idle()


SURROGATE = '{"messages": [{"role": "user", "content": "bad \\ud800 text"}]}'


@pytest.mark.parametrize(("body", "param"), [
    ({"top_k": 2**31}, "top_k"),
    ({"top_logprobs": 2**31}, "top_logprobs"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -1}, "seed"),
    ({"stop_token_ids": [2**32]}, "stop_token_ids[0]"),
    ({"logit_bias": {"4294967296": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 1000}}, "logit_bias.5"),
    ({"max_tokens": 2**31}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": -0.5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"tool_choice": {"function": "x"}}, "tool_choice.function"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"n": 2}, "n"),
    ({"best_of": 2}, "best_of"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}, "messages[0].content[0].type"),
    ({"guided_choice": []}, "guided_choice"),
    ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
    ({"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]}, "functions"),
    ({"model": "\ud800"}, "model"),
    ({"stop": ["ok", "\udfff"]}, "stop[1]"),
])
def test_out_of_range_and_odd_shapes_are_400s_naming_the_field(stack: Stack, body: dict,
                                                                param: str) -> None:
    for stream in (False, True):
        r = post(stack, "/v1/chat/completions", {"messages": HELLO, "max_tokens": 2, **body,
                                                 "stream": stream})
        assert error_of(r, 400)["param"] == param


def test_lone_surrogates_and_completion_ranges(stack: Stack) -> None:
    assert error_of(post(stack, "/v1/chat/completions", SURROGATE), 400)["param"] == "messages[0].content"
    for body, param in [({"prompt": [2**32]}, "prompt[0]"), ({"prompt": []}, "prompt"),
                        ({"prompt": ""}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"),
                        ({"prompt": "x", "logprobs": 6}, "logprobs"),
                        ({"prompt": "x", "suffix": "y"}, "suffix"),
                        ({"prompt": "x", "echo": True, "best_of": 3}, "best_of")]:
        assert error_of(post(stack, "/v1/completions", body), 400)["param"] == param, body


def test_what_popular_clients_send_is_accepted(stack: Stack) -> None:
    messages = [{"role": "system", "content": [{"type": "text", "text": "Be brief.",
                                                "cache_control": {"type": "ephemeral"}}]},
                {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}]
    body = {"model": "default", "messages": messages, "max_tokens": 2,
            "user": {"id": "u1", "name": "Open WebUI"}, "some_future_field": {"x": 1},
            "parallel_tool_calls": True, "modalities": ["text"], "top_k": -1}
    r = post(stack, "/v1/chat/completions", body)
    assert ChatCompletion.model_validate(r.json()).usage.completion_tokens == 2


# ------------------------------------------------------- pure translation


def chat(**fields: Any) -> pb.GenerateRequest:
    return translate.chat_to_proto(ChatCompletionRequest(messages=HELLO, **fields), "id")


def test_vllm_extensions_map_onto_the_proto() -> None:
    r = chat(min_tokens=3, include_stop_str_in_output=True, skip_special_tokens=False,
             reasoning_effort="low", chat_template_kwargs={"enable_thinking": False},
             prompt_logprobs=2, top_k=-1, parallel_tool_calls=False)
    assert r.stopping.min_tokens == 3 and r.stopping.include_stop_str_in_output
    assert r.options.HasField("skip_special_tokens") and not r.options.skip_special_tokens
    assert r.chat.reasoning_effort == "low" and json.loads(r.chat.template_kwargs_json) == {
        "enable_thinking": False}
    assert r.options.prompt_logprobs and r.options.top_logprobs == 2
    assert r.sampling.HasField("top_k") and r.sampling.top_k == 0 and r.max_tool_calls == 1
    assert not chat().options.HasField("skip_special_tokens") and chat().max_tool_calls == 0
    assert chat(guided_choice=["a", "b"]).response_format.choice.choices == ["a", "b"]
    assert chat(guided_regex="[0-9]+").response_format.regex == "[0-9]+"
    assert json.loads(chat(guided_json={"type": "object"}).response_format.json_schema.schema_json) == {
        "type": "object"}


def test_legacy_functions_map_onto_tools() -> None:
    r = chat(functions=[WEATHER], function_call={"name": "get_weather"})
    assert [t.function.name for t in r.tools] == ["get_weather"]
    assert r.tool_choice.function_name == "get_weather" and r.max_tool_calls == 1
    assert chat(functions=[WEATHER], function_call="none").tool_choice.mode == pb.ToolChoice.MODE_NONE


def test_echo_of_token_ids_asks_for_the_prompt_text() -> None:
    body = CompletionRequest(prompt=[5, 6, 7], echo=True, logprobs=1, max_tokens=2)
    r = translate.completion_to_proto(body, "id")
    assert r.options.echo_input and r.options.prompt_logprobs and r.options.top_logprobs == 1
    reply = pb.GenerateResponse(
        model="m", text=" end", input=pb.InputDetails(
            token_ids=[5, 6, 7], text="a b c",
            logprobs=[pb.TokenLogprob(token_id=6, token=" b", logprob=-1.0, text_offset=1),
                      pb.TokenLogprob(token_id=7, token=" c", logprob=-2.0, text_offset=3)]),
        logprobs=[pb.TokenLogprob(token_id=9, token=" end", logprob=-0.5)],
        finish=pb.Finish(reason=pb.STOP_REASON_EOS))
    out = CompletionStream("cmpl-1", 0, body, include_usage=True).answer(reply).model_dump()
    choice = out["choices"][0]
    assert choice["text"] == "a b c end"
    assert choice["logprobs"]["tokens"] == ["a", " b", " c", " end"]
    assert choice["logprobs"]["token_logprobs"] == [None, -1.0, -2.0, -0.5]
    assert choice["logprobs"]["text_offset"] == [0, 1, 3, 5]
    assert not translate.completion_to_proto(CompletionRequest(prompt="x", logprobs=False), "i").options.logprobs


def test_a_completion_is_the_fold_of_its_stream() -> None:
    """The same generation, streamed token by token or answered whole, gives the same completion."""
    body = CompletionRequest(prompt="a b", echo=True, logprobs=1, max_tokens=2)
    prompt = pb.InputDetails(text="a b", logprobs=[pb.TokenLogprob(token=" b", logprob=-1.0, text_offset=1)])
    tokens = [pb.TokenLogprob(token=" c", logprob=-0.5, text_offset=0, top=[pb.TopLogprob(token=" c", logprob=-0.5)]),
              pb.TokenLogprob(token=" d", logprob=-0.25, text_offset=2)]  # offsets in the whole text
    finish = pb.Finish(reason=pb.STOP_REASON_LENGTH, usage=pb.Usage(prompt_tokens=2, completion_tokens=2))
    stream = CompletionStream("cmpl-1", 0, body, include_usage=True)
    chunks = stream.start("m")
    chunks += stream.feed(pb.GenerateStreamResponse(model="m", text=" c", logprobs=tokens[:1], input=prompt))
    # A streamed token's text_offset counts from the start of its own message's text.
    streamed = pb.TokenLogprob(token=" d", logprob=-0.25, text_offset=0)
    chunks += stream.feed(pb.GenerateStreamResponse(text=" d", logprobs=[streamed], finish=finish))
    chunks += stream.finish(finish)
    assert len(chunks) == 4  # echo, two tokens, usage
    reply = pb.GenerateResponse(model="m", text=" c d", logprobs=tokens, input=prompt, finish=finish)
    whole = CompletionStream("cmpl-1", 0, body, include_usage=True).answer(reply)
    assert stream.fold(chunks) == whole
    assert whole.choices[0].text == "a b c d" and whole.choices[0].finish_reason == "length"
    assert whole.choices[0].logprobs.text_offset == [0, 1, 3, 5]
    assert whole.usage.total_tokens == 4


def test_reasoning_and_context_length_stops_in_answers_and_chunks() -> None:
    finish = pb.Finish(reason=pb.STOP_REASON_CONTEXT_LENGTH,
                       usage=pb.Usage(prompt_tokens=3, completion_tokens=4, reasoning_tokens=3))
    body = ChatCompletionRequest(messages=HELLO)
    whole = ChatStream("chatcmpl-1", 0, body, include_usage=True)
    events = whole.start("m") + whole.feed(pb.GenerateStreamResponse(reasoning="Let me think"))
    events += whole.feed(pb.GenerateStreamResponse(text="Hi", finish=finish)) + whole.finish(finish)
    out = ChatCompletion.model_validate(fold_chat(events, whole, body))
    assert out.choices[0].finish_reason == "length" and out.choices[0].message.content == "Hi"
    assert out.choices[0].message.model_extra["reasoning_content"] == "Let me think"
    assert out.usage.completion_tokens_details.reasoning_tokens == 3
    plain = ChatStream("chatcmpl-2", 0, body, include_usage=True)
    events = plain.start("m") + plain.feed(pb.GenerateStreamResponse(text="x", finish=finish))
    events += plain.finish(finish)
    assert "reasoning_content" not in fold_chat(events, plain, body)["choices"][0]["message"]
    stream = ChatStream("chatcmpl-1", 0, body)
    chunks = stream.start("m") + stream.feed(pb.GenerateStreamResponse(reasoning="hmm"))
    chunks += stream.feed(pb.GenerateStreamResponse(text="ok", finish=finish)) + stream.finish(finish)
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    assert parsed[1].choices[0].delta.model_extra["reasoning_content"] == "hmm"
    assert parsed[1].choices[0].delta.content is None
    assert parsed[2].choices[0].delta.content == "ok" and parsed[2].choices[0].finish_reason == "length"


def rpc_error(code: grpc.StatusCode, message: str, reason: str = "", field: str = "") -> grpc.aio.AioRpcError:
    details = []
    if reason:
        details.append(error_details_pb2.ErrorInfo(reason=reason, domain="mlxrpc.v1"))
    if field:
        details.append(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)]))
    packed = []
    for detail in details:
        packed.append(any_pb2.Any())
        packed[-1].Pack(detail)
    status = rpc_status.to_status(status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=packed))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata),
                                details=message)


@pytest.mark.parametrize(("code", "reason", "status", "rest_code"), [
    (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", 400, "invalid_value"),
    (grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_LENGTH_EXCEEDED", 400, "context_length_exceeded"),
    (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND", 404, "model_not_found"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "QUEUE_FULL", 429, "rate_limit_exceeded"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "OUT_OF_MEMORY", 429, "out_of_memory"),
    (grpc.StatusCode.UNIMPLEMENTED, "", 400, "unsupported_value"),
    (grpc.StatusCode.UNAUTHENTICATED, "", 401, "invalid_api_key"),
    (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN", 503, "server_shutting_down"),
    (grpc.StatusCode.UNAVAILABLE, "ENGINE_FAILED", 503, "engine_failed"),
    (grpc.StatusCode.UNAVAILABLE, "NOT_SERVING", 503, "service_unavailable"),
    (grpc.StatusCode.INTERNAL, "INTERNAL", 500, "server_error"),
    (grpc.StatusCode.CANCELLED, "", 499, "cancelled"),
])
def test_grpc_failures_map_to_openai_statuses_types_and_codes(code: grpc.StatusCode, reason: str,
                                                               status: int, rest_code: str) -> None:
    error = from_rpc_error(rpc_error(code, "what happened", reason, field="messages"))
    assert (error.status, error.code, error.param) == (status, rest_code, "messages")
    assert error.body()["error"]["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert (error.response().headers.get("x-should-retry") == "false") == (status == 500)
