"""The OpenAI Responses API (/v1/responses) and its response store.

End to end with the real openai SDK and the OpenAI Agents SDK against the
shared server, plus pure tests of the translation, the event builder (MCP tool
events and reasoning from synthetic proto messages) and the bounded store.
The test model has random weights: assertions are about shapes, grammars and
token counts, never about what the text says.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, Field, TypeAdapter

from mlxrpc.gateway.http.errors import ApiError
from mlxrpc.gateway.responses.events import ResponseBuilder, fold
from mlxrpc.gateway.responses.protocol import ResponsesRequest
from mlxrpc.gateway.responses.translate import input_messages, output_messages, skipped_tools, to_proto
from mlxrpc.service.response_store import ResponseMemory
from mlxrpc.v1 import inference_pb2 as pb

from .conftest import Stack

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12},
                       "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    "strict": True,
}
COLORS = {
    "type": "object",
    "properties": {"colors": {"type": "array", "items": {"type": "string", "maxLength": 8},
                              "minItems": 1, "maxItems": 2}},
    "required": ["colors"],
    "additionalProperties": False,
}
EVENTS = TypeAdapter(ResponseStreamEvent)


def _sdk_valid(event: dict[str, Any]) -> None:
    """Strict validation with the SDK's own types (the SDK itself only constructs)."""
    EVENTS.validate_python(event)


# ------------------------------------------------------------------ openai SDK, end to end


def test_create_returns_a_response_object(client: openai.OpenAI) -> None:
    r = client.responses.create(model="llama", input="Hello there", max_output_tokens=6,
                                metadata={"k": "v"}, user="u1", temperature=0.5)
    assert r.id.startswith("resp_") and r.object == "response" and r.model == "llama"
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant" and message.status == "incomplete"
    assert message.content[0].type == "output_text" and message.content[0].annotations == []
    assert r.output_text == message.content[0].text and r.output_text
    assert r.usage.output_tokens == 6 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + 6
    assert r.usage.input_tokens_details.cached_tokens >= 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert r.metadata == {"k": "v"} and r.user == "u1" and r.temperature == 0.5
    assert r.tool_choice == "auto" and r.tools == [] and r.parallel_tool_calls is True
    Response.model_validate(r.model_dump())


def test_instructions_become_the_system_prompt(client: openai.OpenAI) -> None:
    plain = client.responses.create(model="llama", input="Hi", max_output_tokens=1)
    told = client.responses.create(model="llama", input="Hi", max_output_tokens=1,
                                   instructions="Answer in French, briefly and politely.")
    assert told.instructions.startswith("Answer in French")
    assert told.usage.input_tokens > plain.usage.input_tokens + 5


def test_stream_events_follow_the_responses_sequence(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="llama", input="Tell me", max_output_tokens=5,
                                          stream=True))
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.incomplete"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == deltas
    final = events[-1].response
    assert final.output_text == deltas and final.usage.output_tokens == 5
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


def test_stream_helper_with_a_json_schema_completes(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="llama", input="Two colors", max_output_tokens=120,
        text={"format": {"type": "json_schema", "name": "colors", "schema": COLORS, "strict": True}},
    ) as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed"
    assert final.output_text == "".join(texts)
    jsonschema.validate(json.loads(final.output_text), COLORS)
    assert final.text.format.type == "json_schema"


class Colors(BaseModel):
    colors: list[Annotated[str, Field(max_length=8)]] = Field(min_length=1, max_length=2)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.responses.parse(model="llama", input="Colors please", text_format=Colors,
                               max_output_tokens=200)
    assert r.status == "completed"
    assert isinstance(r.output_parsed, Colors)


def test_json_object_format_gives_json(client: openai.OpenAI) -> None:
    r = client.responses.create(model="llama", input="JSON please", max_output_tokens=200,
                                text={"format": {"type": "json_object"}})
    if r.status == "completed":
        assert isinstance(json.loads(r.output_text), dict)
    else:
        assert r.output_text.startswith("{")


def test_required_tool_choice_gives_a_function_call(client: openai.OpenAI) -> None:
    r = client.responses.create(model="llama", input="Weather in Paris?", tools=[WEATHER],
                                tool_choice="required", max_output_tokens=200)
    assert r.status == "completed"
    (call,) = [item for item in r.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    assert r.tools[0].name == "get_weather" and r.tool_choice == "required"


def test_named_tool_choice_and_streamed_function_call(client: openai.OpenAI) -> None:
    events = list(client.responses.create(
        model="llama", input="Weather?", tools=[WEATHER], max_output_tokens=200, stream=True,
        tool_choice={"type": "function", "name": "get_weather"}, parallel_tool_calls=False))
    kinds = [e.type for e in events]
    opened = kinds.index("response.output_item.added", kinds.index("response.in_progress") + 1)
    # The arguments stream as they are written, in several deltas, before the call ends.
    deltas = kinds[opened + 1:-3]
    assert len(deltas) >= 3 and set(deltas) == {"response.function_call_arguments.delta"}
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    added, done = events[opened].item, events[-2].item
    assert added.type == done.type == "function_call" and added.call_id == done.call_id
    assert added.arguments == "" and events[-3].arguments == done.arguments
    assert "".join(e.delta for e in events[opened + 1:-3]) == done.arguments
    jsonschema.validate(json.loads(done.arguments), WEATHER["parameters"])
    assert events[-1].response.parallel_tool_calls is False


def test_function_call_output_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model="llama", input="Weather in Rome?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=200)
    call = next(item for item in first.output if item.type == "function_call")
    history = [{"role": "user", "content": "Weather in Rome?"}, call.model_dump(exclude_none=True)]
    short = client.responses.create(model="llama", tools=[WEATHER], tool_choice="none", max_output_tokens=2,
                                    input=[*history, {"type": "function_call_output", "call_id": call.call_id,
                                                      "output": "{}"}])
    long = client.responses.create(model="llama", tools=[WEATHER], tool_choice="none", max_output_tokens=2,
                                   input=[*history, {"type": "function_call_output", "call_id": call.call_id,
                                                     "output": json.dumps({"temperature": 21, "sky": "clear",
                                                                           "wind": "light from the west"})}])
    assert all(item.type == "message" for item in short.output + long.output)
    assert long.usage.input_tokens > short.usage.input_tokens + 5


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="llama", input="My name is Ada.", max_output_tokens=4)
    alone = client.responses.create(model="llama", input="What is my name?", max_output_tokens=4)
    second = client.responses.create(model="llama", input="What is my name?", max_output_tokens=4,
                                     previous_response_id=first.id)
    third = client.responses.create(model="llama", input="Again?", max_output_tokens=4,
                                    previous_response_id=second.id)
    assert second.previous_response_id == first.id
    # The first turn (input and output) is in the prompt of the second.
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.input_tokens
    assert third.usage.input_tokens > second.usage.input_tokens + second.usage.output_tokens
    fetched = client.responses.retrieve(first.id)
    assert fetched.id == first.id and fetched.output_text == first.output_text


def test_stream_is_stored_and_continued(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="llama", input="Hi", max_output_tokens=3, stream=True))
    streamed = events[-1].response
    assert client.responses.retrieve(streamed.id).output_text == streamed.output_text
    nxt = client.responses.create(model="llama", input="and?", max_output_tokens=2,
                                  previous_response_id=streamed.id)
    assert nxt.status == "incomplete"


def test_a_failure_mid_stream_is_an_error_event_then_response_failed(client: openai.OpenAI,
                                                                     stack: Stack) -> None:
    import grpc

    from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

    stream = client.responses.create(model="llama", input="Go on", max_output_tokens=250, stream=True)
    events = []
    with grpc.insecure_channel(stack.grpc_target) as channel:
        for event in stream:
            events.append(event)
            if event.type == "response.output_text.delta":
                found = pb_grpc.InferenceStub(channel).Abort(
                    pb.AbortRequest(request_id=events[0].response.id),
                    metadata=(("authorization", "Bearer not-needed"),))
                assert found.found
                break
    events += list(stream)
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_delete_and_unknown_ids_are_404s(client: openai.OpenAI) -> None:
    r = client.responses.create(model="llama", input="Hi", max_output_tokens=2)
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="llama", input="Hi", previous_response_id=r.id)
    assert caught.value.body["message"] == f"Previous response with id '{r.id}' not found."
    assert caught.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="llama", input="Hi", stream=True, previous_response_id="resp_nope")
    with pytest.raises(openai.NotFoundError):
        client.responses.delete("resp_nope")


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    r = client.responses.create(model="llama", input="Hi", max_output_tokens=2, store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


def test_store_disabled_makes_previous_response_id_a_400(make_stack) -> None:
    stack = make_stack(responses_store_size=0)
    client = openai.OpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0)
    r = client.responses.create(model="llama", input="Hi", max_output_tokens=2)
    assert r.store is False
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="llama", input="Hi", previous_response_id=r.id)
    assert "--responses-store-size" in caught.value.body["message"]


def test_stored_responses_belong_to_their_api_key(make_stack) -> None:
    stack = make_stack(api_key=["key-a", "key-b"])
    base = f"{stack.http_base}/v1"
    a = openai.OpenAI(base_url=base, api_key="key-a", max_retries=0)
    b = openai.OpenAI(base_url=base, api_key="key-b", max_retries=0)
    r = a.responses.create(model="llama", input="Hi", max_output_tokens=2)
    assert a.responses.retrieve(r.id).id == r.id
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="llama", input="Hi", previous_response_id=r.id)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).responses.retrieve(r.id)


@pytest.mark.parametrize(("extra", "param"), [
    ({"input": [{"type": "web_search_call", "id": "x"}]}, "input[0]"),
    ({"tools": [{"type": "made_up"}]}, "tools[0]"),
    ({"tools": [{"type": [None, None]}]}, "tools[0]"),
    ({"input": [{"type": [None, None], "role": "user", "content": "x"}]}, "input[0]"),
    ({"background": True}, "background"),
    ({"tool_choice": {"type": "allowed_tools"}}, "tool_choice"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": []}, "input"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
])
def test_bad_requests_are_400s_naming_the_field(client: openai.OpenAI, extra: dict, param: str) -> None:
    body = {"model": "llama", "input": "Hi", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/responses", body=body, cast_to=object)
    assert caught.value.body["param"].startswith(param)


def test_unknown_model_streaming_is_a_404_before_the_stream(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="Hi", stream=True)


# ------------------------------------------------------------------ OpenAI Agents SDK


@pytest.fixture
def agents_on_sidecar(stack: Stack):
    import agents
    from agents.models import _openai_shared

    before = _openai_shared.get_default_openai_client()
    agents.set_tracing_disabled(True)
    agents.set_default_openai_api("responses")
    yield lambda: agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=f"{stack.http_base}/v1", api_key="x", max_retries=0),
        use_for_tracing=False)
    _openai_shared.set_default_openai_client(before)


class Forecast(BaseModel):
    sky: str = Field(max_length=8)


def test_agents_sdk_runs_an_agent_with_a_function_tool(agents_on_sidecar) -> None:
    from agents import Agent, MaxTurnsExceeded, ModelSettings, Runner, function_tool

    calls: list[str] = []

    @function_tool
    def get_weather(city: Annotated[str, Field(max_length=8)]) -> str:  # bounded: the model is random
        """Current weather for a city."""
        calls.append(city)
        return "sunny"

    async def run(max_turns: int, **agent_args: Any) -> Any:
        agents_on_sidecar()  # the AsyncOpenAI client belongs to this event loop
        agent = Agent(name="weather", instructions="You answer weather questions.", model="llama",
                      tools=[get_weather], **agent_args)
        return await Runner.run(agent, "Weather in Oslo?", max_turns=max_turns)

    # Made to call its tool every turn: the tool runs each turn, its output goes
    # back as function_call_output, and the run stops at max_turns.
    with pytest.raises(MaxTurnsExceeded):
        asyncio.run(run(2, model_settings=ModelSettings(tool_choice="required"), reset_tool_choice=False))
    assert len(calls) == 2
    # Default model settings with a structured final output: the grammar lets the
    # random model finish, so the run either completes with a Forecast or keeps
    # calling the tool until max_turns.
    try:
        result = asyncio.run(run(3, output_type=Forecast))
    except MaxTurnsExceeded:
        assert len(calls) > 2
    else:
        assert isinstance(result.final_output, Forecast)


# ------------------------------------------------------------------ pure translation


def _body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"model": "m", **fields})


def test_input_items_become_chat_messages() -> None:
    body = _body(input=[
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "look"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\": 1}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "two"}]},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "fs", "name": "read", "arguments": "{}",
         "output": "data"},
    ])
    messages = input_messages(body)
    assert [m.role for m in messages] == ["developer", "user", "assistant", "tool", "tool",
                                          "assistant", "tool"]
    assert messages[1].content[1].image.url.startswith("data:image/png")
    assert messages[2].content[0].text == "ok"
    assert [c.name for c in messages[2].tool_calls] == ["f", "g"]
    assert (messages[3].tool_call_id, messages[3].name, messages[3].content[0].text) == ("c1", "f", "one")
    assert messages[4].content[0].text == "two"
    assert messages[5].tool_calls[0].name == "fs__read" and messages[6].content[0].text == "data"


def test_request_fields_map_onto_the_generate_request() -> None:
    body = _body(
        input="hi", instructions="sys", max_output_tokens=9, temperature=0.2, top_p=0.9, seed=3,
        reasoning={"effort": "minimal"}, parallel_tool_calls=False, include=["message.output_text.logprobs"],
        top_logprobs=2, tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "c", "schema": COLORS, "strict": True}},
        tools=[WEATHER, {"type": "mcp", "server_label": "fs", "allowed_tools": ["read"],
                         "require_approval": "never"},
               {"type": "mcp", "server_label": "git", "allowed_tools": {"tool_names": ["log"]}}])
    history = [pb.ChatMessage(role="user", content=[pb.ContentPart(text="before")])]
    request = to_proto(body, "resp_1", history, input_messages(body))
    assert request.request_id == "resp_1"
    assert [m.role for m in request.chat.messages] == ["system", "user", "user"]
    assert request.chat.messages[1].content[0].text == "before"
    assert request.chat.reasoning_effort == "low"
    assert request.stopping.max_tokens == 9 and request.sampling.seed == 3
    assert request.sampling.temperature == pytest.approx(0.2)
    assert request.max_tool_calls == 1
    assert request.options.logprobs and request.options.top_logprobs == 2
    assert request.tool_choice.function_name == "get_weather"
    assert json.loads(request.response_format.json_schema.schema_json) == COLORS
    assert request.response_format.json_schema.strict
    assert json.loads(request.tools[0].function.parameters_json) == WEATHER["parameters"]
    assert [(t.server_label, list(t.allowed_tools)) for t in request.mcp_tools] == [("fs", ["read"]),
                                                                                    ("git", ["log"])]


@pytest.mark.parametrize(("fields", "param"), [
    ({"conversation": "conv_1"}, "conversation"),
    ({"prompt": {"id": "p"}}, "prompt"),
    ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}, "tools[0].server_url"),
    ({"tools": [{"type": "mcp", "server_label": "x", "require_approval": "always"}]}, None),
    ({"tool_choice": {"type": "mcp", "server_label": "x"}}, "tool_choice"),
])
def test_unsupported_requests_are_refused(fields: dict, param: str | None) -> None:
    try:
        body = _body(input="hi", **fields)
    except ValueError:
        assert param is None  # refused by the schema already
        return
    with pytest.raises(ApiError) as caught:
        to_proto(body, "r", [], input_messages(body))
    assert caught.value.status == 400 and caught.value.param == param


def _collect(builder: ResponseBuilder, messages: list[pb.GenerateStreamResponse]) -> list[dict]:
    events = builder.start("m")
    for message in messages:
        events += builder.feed(message)
        if message.HasField("finish"):
            events += builder.finish(message.finish)
    for event in events:
        _sdk_valid(json.loads(json.dumps(event)))
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def _mcp_call(call_id: str, name: str, args: str) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(tool_event=pb.ToolEvent(call=pb.ToolCall(
        id=call_id, type="function", name=name, arguments_json=args)))


def _mcp_result(call_id: str, name: str, content: str, error: bool = False) -> pb.GenerateStreamResponse:
    return pb.GenerateStreamResponse(tool_event=pb.ToolEvent(result=pb.ToolResult(
        call_id=call_id, name=name, content=content, is_error=error)))


def test_reasoning_mcp_calls_and_text_become_ordered_items() -> None:
    body = _body(input="hi", tools=[{"type": "mcp", "server_label": "my__fs"}])
    finish = pb.Finish(reason=pb.STOP_REASON_TOOL_CALLS, usage=pb.Usage(
        prompt_tokens=5, completion_tokens=7, cached_tokens=2, reasoning_tokens=3),
        tool_calls=[pb.ToolCall(id="call_9", type="function", name="f", arguments_json='{"x":1}')])
    builder = ResponseBuilder("resp_1", 0, body)
    events = _collect(builder, [
        pb.GenerateStreamResponse(reasoning="Let me "),
        pb.GenerateStreamResponse(reasoning="look."),
        _mcp_call("c1", "my__fs__read", '{"path":"a"}'),
        _mcp_result("c1", "my__fs__read", "contents"),
        pb.GenerateStreamResponse(text="It says "),
        _mcp_call("c2", "my__fs__stat", "{}"),
        _mcp_result("c2", "my__fs__stat", "no such file", error=True),
        pb.GenerateStreamResponse(text="done", finish=finish),
    ])
    response = Response.model_validate(builder.response())
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "mcp_call", "message", "mcp_call", "message", "function_call"]
    reasoning, read, _, stat, last, call = response.output
    assert reasoning.content[0].text == "Let me look." and reasoning.status == "completed"
    assert (read.server_label, read.name, read.arguments, read.output) == ("my__fs", "read", '{"path":"a"}',
                                                                           "contents")
    assert read.status == "completed" and read.error is None
    assert stat.status == "failed" and stat.error.type == "mcp_tool_execution_error"
    assert last.content[0].text == "done" and response.output_text == "It says done"
    assert (call.call_id, call.name, call.arguments) == ("call_9", "f", '{"x":1}')
    assert response.status == "completed"
    assert response.usage.input_tokens_details.cached_tokens == 2
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    types = [e["type"] for e in events]
    assert types.count("response.reasoning_text.delta") == 2
    assert types.index("response.mcp_call.in_progress") < types.index("response.mcp_call.completed")
    assert "response.mcp_call.failed" in types and types[-1] == "response.completed"
    # Replayed as history: the server-side calls and their results are part of it.
    replay = output_messages(builder.response()["output"])
    assert [m.role for m in replay] == ["assistant", "tool", "assistant", "assistant", "tool", "assistant"]
    assert replay[0].tool_calls[0].name == "my__fs__read" and replay[1].content[0].text == "contents"
    assert replay[-1].tool_calls[0].id == "call_9"


def test_non_streamed_response_is_the_fold_of_the_stream() -> None:
    finish = pb.Finish(reason=pb.STOP_REASON_LENGTH, usage=pb.Usage(prompt_tokens=1, completion_tokens=2))
    events = _collect(ResponseBuilder("resp_2", 0, _body(input="x")), [
        pb.GenerateStreamResponse(reasoning="hmm"), _mcp_call("c", "fs__ls", "{}"),
        _mcp_result("c", "fs__ls", "a b"), pb.GenerateStreamResponse(text="hello", finish=finish)])
    response = Response.model_validate(fold(events))
    assert [item.type for item in response.output] == ["reasoning", "mcp_call", "message"]
    assert response.output[1].server_label == "fs" and response.output[1].output == "a b"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output[2].status == "incomplete"


def test_an_empty_answer_is_still_a_message_and_failures_are_events() -> None:
    builder = ResponseBuilder("resp_3", 0, _body(input="x"))
    events = _collect(builder, [pb.GenerateStreamResponse(finish=pb.Finish(reason=pb.STOP_REASON_EOS))])
    assert builder.response()["output"][0]["content"][0]["text"] == ""
    assert events[-1]["type"] == "response.completed"
    builder = ResponseBuilder("resp_4", 0, _body(input="x"))
    events = builder.start("m") + builder.feed(pb.GenerateStreamResponse(text="par"))
    events += builder.fail(ApiError(500, "engine failed", code="internal"))
    for event in events:
        _sdk_valid(json.loads(json.dumps(event)))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1]["response"]["error"]["message"] == "engine failed"


def test_every_request_field_is_in_the_docs_table() -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = docs.split("## OpenAI Responses API", 1)[1]
    documented = set(re.findall(r"`([a-z_]+)[`\[. ]", section))
    missing = set(ResponsesRequest.model_fields) - documented
    assert not missing, f"Responses fields missing from docs/api.md: {sorted(missing)}"


# ------------------------------------------------------------------ the store


def _stored(response_id: str, previous: str = "", text: str = "x") -> pb.StoredResponse:
    return pb.StoredResponse(id=response_id, previous_response_id=previous,
                             messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text=text)])])


def test_store_chains_conversations_per_owner() -> None:
    memory = ResponseMemory(10, 0, 60)
    memory.put("a", _stored("r1", text="one"))
    memory.put("a", _stored("r2", "r1", text="two"))
    memory.put("a", _stored("r3", "r2", text="three"))
    assert [m.content[0].text for m in memory.conversation("a", "r3")] == ["one", "two", "three"]
    assert memory.get("b", "r1") is None and memory.conversation("b", "r3") is None
    assert memory.delete("a", "r2") and not memory.delete("a", "r2")
    assert memory.conversation("a", "r3") is None  # its chain is broken
    assert memory.get("a", "r3") is not None


def test_store_evicts_least_recently_used_by_count_bytes_and_age() -> None:
    now = [0.0]
    memory = ResponseMemory(2, 0, 10, clock=lambda: now[0])
    memory.put("", _stored("r1"))
    memory.put("", _stored("r2"))
    memory.get("", "r1")  # r2 is now the least recently used
    memory.put("", _stored("r3"))
    assert memory.get("", "r2") is None and memory.get("", "r1") is not None
    now[0] = 5.0
    memory.get("", "r3")
    now[0] = 12.0  # r1 was last used at 0, r3 at 5
    assert memory.get("", "r1") is None and memory.get("", "r3") is not None
    size = _stored("r9", text="y" * 50).ByteSize()
    small = ResponseMemory(100, 2 * size, 60)
    for i in range(3):
        small.put("", _stored(f"b{i}", text="y" * 50))
    assert len(small) == 2 and small.bytes <= 2 * size
    with pytest.raises(Exception, match="responses-store-bytes"):
        small.put("", _stored("huge", text="z" * 1000))


CODEX_TOOLS = [
    {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {}}},
    {"type": "namespace", "name": "multi_agent_v1", "description": "Sub-agents", "tools": [
        {"type": "function", "name": "close_agent", "strict": False,
         "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}]},
    {"type": "web_search", "external_web_access": False},
]


def test_namespace_tools_are_offered_as_their_functions_and_hosted_ones_skipped() -> None:
    body = _body(input=[
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "close_agent", "namespace": "multi_agent_v1",
         "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "closed"}], tools=CODEX_TOOLS)
    request = to_proto(body, "r", [], input_messages(body))
    assert [t.function.name for t in request.tools] == ["exec_command", "multi_agent_v1.close_agent"]
    assert skipped_tools(body) == ["web_search"]
    assert request.chat.messages[1].tool_calls[0].name == "multi_agent_v1.close_agent"
    # The model's call of a namespaced tool comes back as its name and namespace.
    finish = pb.Finish(reason=pb.STOP_REASON_TOOL_CALLS, tool_calls=[pb.ToolCall(
        id="c2", name="multi_agent_v1.close_agent", arguments_json='{"id": "a"}')])
    builder = ResponseBuilder("resp_5", 0, body)
    events = _collect(builder, [
        pb.GenerateStreamResponse(tool_call_deltas=[pb.ToolCallDelta(index=0, id="c2",
                                                                     name="multi_agent_v1.close_agent")]),
        pb.GenerateStreamResponse(tool_call_deltas=[pb.ToolCallDelta(index=0, arguments_delta='{"id": ')]),
        pb.GenerateStreamResponse(tool_call_deltas=[pb.ToolCallDelta(index=0, arguments_delta='"a"}')],
                                  finish=finish)])
    (call,) = fold(events)["output"]
    assert (call["name"], call["namespace"], call["call_id"], call["arguments"]) == (
        "close_agent", "multi_agent_v1", "c2", '{"id": "a"}')
    assert [e["type"] for e in events].count("response.function_call_arguments.delta") == 2
    assert output_messages([call])[0].tool_calls[0].name == "multi_agent_v1.close_agent"
