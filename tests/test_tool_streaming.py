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
