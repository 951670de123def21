"""Structured output (response_format) and tool calling, enforced by grammars.

The test model has random weights, so any valid output here is the grammar's
doing: without it the model writes gibberish.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest

from .conftest import Stack

COLORS_SCHEMA = {
    "type": "object",
    "properties": {"colors": {"type": "array", "items": {"type": "string", "maxLength": 12},
                              "minItems": 1, "maxItems": 3}},
    "required": ["colors"],
    "additionalProperties": False,
}

NESTED_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "owner": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 10}, "verified": {"type": "boolean"}},
            "required": ["city", "verified"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 2},
    },
    "required": ["name", "kind", "age", "owner", "tags"],
    "additionalProperties": False,
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12},
                           "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"],
        "additionalProperties": False}},
}

MESSAGES = [{"role": "user", "content": "List 3 colors"}]


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_always_validates(client: openai.OpenAI, seed: int) -> None:
    for schema in (COLORS_SCHEMA, NESTED_SCHEMA):
        r = client.chat.completions.create(model="default", messages=MESSAGES, temperature=1.0,
                                           seed=seed, max_tokens=200,
                                           response_format=schema_format(schema))
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_without_a_grammar_the_model_does_not_write_json(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="default", messages=MESSAGES, temperature=1.0,
                                       seed=0, max_tokens=40)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.choices[0].message.content)


@pytest.mark.parametrize("seed", range(4))
def test_json_object_output_parses(client: openai.OpenAI, seed: int) -> None:
    r = client.chat.completions.create(model="default", messages=MESSAGES, temperature=0.7,
                                       seed=seed, max_tokens=400,
                                       response_format={"type": "json_object"})
    content = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still a valid JSON prefix
        assert content.startswith("{")


def test_streamed_structured_output_validates(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="default", messages=MESSAGES, stream=True,
                                            max_tokens=200, seed=3,
                                            response_format=schema_format(NESTED_SCHEMA))
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), NESTED_SCHEMA)


async def test_constrained_and_free_requests_share_a_batch(aclient: openai.AsyncOpenAI,
                                                           stack: Stack) -> None:
    async def free(i: int) -> str:
        r = await aclient.chat.completions.create(
            model="default", messages=[{"role": "user", "content": f"free {i}"}],
            temperature=0, max_tokens=16)
        return r.choices[0].message.content

    async def constrained(i: int) -> str:
        r = await aclient.chat.completions.create(
            model="default", messages=MESSAGES, seed=i, max_tokens=200,
            response_format=schema_format(NESTED_SCHEMA))
        return r.choices[0].message.content

    alone = [await free(i) for i in range(3)]
    stack.wait_idle()
    stack.engine.reset_peak()
    results = await asyncio.gather(*(free(i) for i in range(3)), *(constrained(i) for i in range(4)))
    assert stack.engine.stats().peak_running >= 4
    assert list(results[:3]) == alone, "a grammar mask leaked into an unconstrained request"
    for text in results[3:]:
        jsonschema.validate(json.loads(text), NESTED_SCHEMA)


@pytest.mark.parametrize(("schema", "message"), [
    ({"type": "object", "properties": {"a": {"type": "strang"}}}, "strang"),
    ({"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, "nowhere"),
])
def test_bad_schema_is_a_400_naming_the_problem(client: openai.OpenAI, schema: dict,
                                                message: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=MESSAGES,
                                       response_format=schema_format(schema))
    assert caught.value.body["param"] == "response_format.json_schema"
    assert message in caught.value.body["message"]


def test_vllm_mlx_guide_json_examples(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="default", messages=MESSAGES, response_format={"type": "json_object"},
        max_tokens=300, temperature=0)
    assert response.choices[0].message.content.startswith("{")
    # A seed, because a random-weight model can write an unbounded string forever.
    response = client.chat.completions.create(
        model="default", messages=MESSAGES, max_tokens=300, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "colors", "schema": {
            "type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"}}},
            "required": ["colors"]}}})
    data = json.loads(response.choices[0].message.content)
    assert "colors" in data


# ------------------------------------------------------------------ tools


@pytest.mark.parametrize("seed", range(4))
def test_tool_choice_required_always_yields_a_valid_call(client: openai.OpenAI, seed: int) -> None:
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", seed=seed, max_tokens=200)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    tool = {"get_weather": WEATHER_TOOL, "get_time": TIME_TOOL}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_named_tool_choice_calls_that_function(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "What time is it?"}],
        tools=[WEATHER_TOOL, TIME_TOOL], max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["zone"] in ("UTC", "CET")


def test_tool_calls_stream_as_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[WEATHER_TOOL], tool_choice="required", stream=True, max_tokens=200)
    chunks = [c for c in stream if c.choices]
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    # As OpenAI streams a call: id, type and name with empty arguments, then the arguments as written.
    assert len(deltas) >= 4 and {d.index for d in deltas} == {0}
    assert (deltas[0].function.name, deltas[0].function.arguments, deltas[0].type) == ("get_weather", "", "function")
    assert deltas[0].id and all(d.id is None and d.function.name is None for d in deltas[1:])
    arguments = "".join(d.function.arguments for d in deltas[1:])
    jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices[0].delta.model_dump(exclude_none=True) == {}
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "<tool_call>" not in content


def test_tool_conversation_history_is_accepted(client: openai.OpenAI) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    r = client.chat.completions.create(model="default", messages=messages, tools=[WEATHER_TOOL],
                                       tool_choice="none", max_tokens=8)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.tool_calls is None


def test_tool_errors_are_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="qwen", messages=MESSAGES, tools=[WEATHER_TOOL])
    assert caught.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="default", messages=MESSAGES, tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "nope"}})
    assert caught.value.body["param"] == "tool_choice"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=MESSAGES, tool_choice="required")
