"""Tool calls stream as the model writes them, and a call cut off keeps what was written.

The demo model's template writes Hermes-style ``<tool_call>{json}</tool_call>``;
a forced call is grammar-written, so its arguments take many tokens and the
deltas must arrive across several stream messages before the finish.
"""

from __future__ import annotations

import json

import grpc
import jsonschema
import pytest

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}


def forced_call(max_tokens: int) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model="llama", chat=pb.ChatInput(
        messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="Weather in Paris?")])]))
    request.tools.add(type="function", function=pb.FunctionDefinition(
        name="get_weather", parameters_json=json.dumps(WEATHER)))
    request.tool_choice.mode = pb.ToolChoice.MODE_REQUIRED
    request.stopping.max_tokens = max_tokens
    request.sampling.seed = 3
    return request


@pytest.fixture
async def stub(stack: Stack):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


async def test_argument_deltas_stream_before_the_finish(stub) -> None:
    messages = [m async for m in stub.StreamGenerate(forced_call(200))]
    finish = messages[-1].finish
    with_args = [i for i, m in enumerate(messages) if any(d.arguments_delta for d in m.tool_call_deltas)]
    # Several messages carry argument pieces, the first well before the last message.
    assert len(with_args) >= 3 and with_args[0] < len(messages) - 2
    deltas = [d for m in messages for d in m.tool_call_deltas]
    assert deltas[0].id and deltas[0].name == "get_weather" and not deltas[0].arguments_delta
    assert all(d.index == 0 and not d.name and not d.id for d in deltas[1:])
    (call,) = finish.tool_calls
    assert finish.reason == pb.STOP_REASON_TOOL_CALLS
    assert call.id == deltas[0].id and call.name == "get_weather"
    assert call.arguments_json == "".join(d.arguments_delta for d in deltas)
    jsonschema.validate(json.loads(call.arguments_json), WEATHER)


async def test_a_call_cut_by_max_tokens_keeps_its_partial_arguments(stub) -> None:
    full = await stub.Generate(forced_call(200))
    (whole,) = full.finish.tool_calls
    messages = [m async for m in stub.StreamGenerate(forced_call(40))]
    finish = messages[-1].finish
    assert finish.reason == pb.STOP_REASON_LENGTH
    (call,) = finish.tool_calls
    assert call.name == "get_weather"
    streamed = "".join(d.arguments_delta for m in messages for d in m.tool_call_deltas)
    assert call.arguments_json == streamed
    # Same seed, same grammar: the cut call is a prefix of the whole one.
    assert call.arguments_json and whole.arguments_json.startswith(call.arguments_json)
    assert call.arguments_json != whole.arguments_json
    unary = await stub.Generate(forced_call(40))
    assert unary.finish.reason == pb.STOP_REASON_LENGTH
    assert [(c.name, c.arguments_json) for c in unary.finish.tool_calls] == [(call.name, call.arguments_json)]
    assert unary.text == ""


# ------------------------------------------------------------------ the REST surfaces

TOOL = {"name": "get_weather", "description": "Weather", "parameters": WEATHER}
USER = [{"role": "user", "content": "Weather in Paris?"}]


def test_chat_streams_arguments_before_the_finish_and_folds_to_the_answer(client) -> None:
    from openai.types.chat import ChatCompletionChunk

    args = {"model": "llama", "messages": USER, "tools": [{"type": "function", "function": TOOL}],
            "tool_choice": "required", "max_tokens": 200, "seed": 5}
    chunks = [c for c in client.chat.completions.create(stream=True, **args) if c.choices]
    for c in chunks:  # OpenAI's exact chunk shapes
        ChatCompletionChunk.model_validate(c.model_dump())
    with_args = [i for i, c in enumerate(chunks)
                 if any(tc.function.arguments for tc in c.choices[0].delta.tool_calls or [])]
    finish_at = next(i for i, c in enumerate(chunks) if c.choices[0].finish_reason)
    assert len(with_args) >= 3 and with_args[-1] < finish_at == len(chunks) - 1
    whole = client.chat.completions.create(**args)
    (call,) = whole.choices[0].message.tool_calls
    streamed = "".join(tc.function.arguments or "" for c in chunks for tc in c.choices[0].delta.tool_calls or [])
    assert streamed == call.function.arguments and whole.choices[0].finish_reason == "tool_calls"


def test_chat_call_cut_by_max_tokens_keeps_its_arguments(client) -> None:
    args = {"model": "llama", "messages": USER, "tools": [{"type": "function", "function": TOOL}],
            "tool_choice": "required", "max_tokens": 55, "seed": 5}
    whole = client.chat.completions.create(**args)
    choice = whole.choices[0]
    (call,) = choice.message.tool_calls
    assert choice.finish_reason == "length" and call.function.name == "get_weather"
    assert call.function.arguments.startswith('{"city": "') and choice.message.content is None
    chunks = [c for c in client.chat.completions.create(stream=True, **args) if c.choices]
    streamed = "".join(tc.function.arguments or "" for c in chunks for tc in c.choices[0].delta.tool_calls or [])
    assert streamed == call.function.arguments and chunks[-1].choices[0].finish_reason == "length"


def test_responses_streams_and_folds_a_cut_call(client) -> None:
    args = {"model": "llama", "input": "Weather in Paris?", "tools": [{"type": "function", **TOOL}],
            "tool_choice": "required", "max_output_tokens": 55, "temperature": 0}
    events = list(client.responses.create(stream=True, **args))
    kinds = [e.type for e in events]
    assert kinds.count("response.function_call_arguments.delta") >= 3
    assert kinds.index("response.function_call_arguments.delta") < kinds.index("response.function_call_arguments.done")
    assert kinds[-1] == "response.incomplete"
    whole = client.responses.create(**args)
    (call,) = [item for item in whole.output if item.type == "function_call"]
    assert whole.status == "incomplete" and call.status == "incomplete"
    assert call.name == "get_weather" and call.arguments.startswith('{"city": "')
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed == call.arguments


def test_anthropic_streams_input_json_and_folds_a_cut_tool_use(stack) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=stack.http_base, api_key="x", max_retries=0)
    args = {"model": "llama", "messages": USER, "max_tokens": 55, "extra_body": {"temperature": 0},
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}]}
    with client.messages.stream(**args) as stream:
        events = list(stream)
        streamed = stream.get_final_message()
    kinds = [e.type for e in events]
    pieces = [e for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert len(pieces) >= 3 and kinds.index("content_block_delta") < kinds.index("message_delta")
    whole = client.messages.create(**args)
    assert whole.stop_reason == streamed.stop_reason == "max_tokens"
    (block,) = whole.content
    assert block.type == "tool_use" and block.name == "get_weather" and isinstance(block.input, dict)
    partial = "".join(p.delta.partial_json for p in pieces)
    # The call so far: its city, cut mid-string, closed.
    assert partial.startswith('{"city": "') and json.loads(partial + '"}') == block.input and block.id
