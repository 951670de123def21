"""Generation options over gRPC: min_tokens, kept stop strings, special tokens,
seeds, context-length stops, prompt logprobs and token bytes, roles, efforts."""

from __future__ import annotations

import grpc
import pytest

from mlxrpc.engine.reasoning import ReasoningFormat, ReasoningSplitter, thinking_enabled
from mlxrpc.engine.tool_format import ToolFormat
from mlxrpc.engine.tools import LLAMA_PYTHON_TAG, ToolCallExtractor, _parse_llama_json
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack
from .helpers import bad_request_field, chat_request, error_reason, text_request


@pytest.fixture
async def stub(stack: Stack):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


async def _eos(stub) -> int:
    return (await stub.ModelInfo(pb.ModelInfoRequest(model="llama"))).eos_token_ids[0]


async def test_min_tokens_holds_back_eos(stub) -> None:
    eos = await _eos(stub)
    eager = text_request(max_tokens=20)
    eager.sampling.logit_bias[eos] = 100
    assert (await stub.Generate(eager)).finish.usage.completion_tokens == 1
    eager.stopping.min_tokens = 5
    reply = await stub.Generate(eager)
    assert reply.finish.usage.completion_tokens == 6 and reply.finish.reason == pb.STOP_REASON_EOS


async def test_stop_string_kept_on_request(stub) -> None:
    free = (await stub.Generate(text_request(max_tokens=24, ignore_eos=True))).text
    stop = free[len(free) // 2: len(free) // 2 + 3]
    assert stop.strip()
    cut = await stub.Generate(text_request(max_tokens=24, ignore_eos=True, stop=[stop]))
    assert stop not in cut.text and cut.finish.reason == pb.STOP_REASON_STOP_SEQUENCE
    kept = text_request(max_tokens=24, ignore_eos=True, stop=[stop])
    kept.stopping.include_stop_str_in_output = True
    assert (await stub.Generate(kept)).text == cut.text + stop


async def test_special_tokens_stay_out_of_text_unless_asked(stub) -> None:
    special = (await stub.Tokenize(pb.TokenizeRequest(model="llama", text="<|im_start|>",
                                                      add_special_tokens=False))).token_ids[0]
    request = text_request(max_tokens=3, ignore_eos=True)
    request.sampling.logit_bias[special] = 100
    hidden = await stub.Generate(request)
    assert list(hidden.token_ids) == [special] * 3 and hidden.text == ""
    request.options.skip_special_tokens = False
    assert (await stub.Generate(request)).text == "<|im_start|>" * 3


async def test_the_seed_used_is_reported_and_reproduces(stub) -> None:
    request = text_request(max_tokens=8, temperature=1.0, ignore_eos=True)
    first = await stub.Generate(request)
    assert first.finish.seed
    request.sampling.seed = first.finish.seed
    again = await stub.Generate(request)
    assert again.token_ids == first.token_ids and again.finish.seed == first.finish.seed


async def test_context_length_stop_and_overflow(stub) -> None:
    long_prompt = " ".join(["word"] * 60)
    n = len((await stub.Tokenize(pb.TokenizeRequest(model="qwen", text=long_prompt))).token_ids)
    assert n < 256
    reply = await stub.Generate(text_request(long_prompt, model="qwen", max_tokens=200, ignore_eos=True))
    assert reply.finish.reason == pb.STOP_REASON_CONTEXT_LENGTH
    assert reply.finish.usage.completion_tokens == 256 - n
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(text_request(long_prompt * 2, model="qwen"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "CONTEXT_LENGTH_EXCEEDED"
    assert "maximum context length is 256 tokens" in caught.value.details()


async def test_prompt_logprobs_and_token_bytes(stub) -> None:
    request = text_request("Hello wonderful world", max_tokens=6, ignore_eos=True)
    request.options.prompt_logprobs = True
    request.options.top_logprobs = 3
    reply = await stub.Generate(request)
    prompt = list(reply.input.token_ids)
    assert len(prompt) > 2 and len(reply.input.logprobs) == len(prompt) - 1
    for token, lp in zip(prompt[1:], reply.input.logprobs, strict=True):
        assert lp.token_id == token and lp.logprob <= 0 and len(lp.top) == 3
        assert lp.top[0].logprob >= lp.logprob - 1e-4
    assert reply.input.text.encode().endswith(b"".join(lp.token_bytes for lp in reply.input.logprobs))
    generated = text_request(max_tokens=12, ignore_eos=True)
    generated.options.logprobs = True
    out = await stub.Generate(generated)
    assert b"".join(lp.token_bytes for lp in out.logprobs) == out.text.encode()


async def test_developer_role_and_reasoning_effort(stub) -> None:
    request = chat_request()
    request.chat.messages.insert(0, pb.ChatMessage(role="developer", content=[pb.ContentPart(text="Be brief.")]))
    request.options.echo_input = True
    reply = await stub.Generate(request)
    assert "Be brief." in reply.input.text and "developer" not in reply.input.text
    request.chat.reasoning_effort = "high"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_field(caught.value) == "reasoning_effort"


# ---------------------------------------------------------------- pure units

THINK = ReasoningFormat("<think>", "</think>", (9,))


def _split(chunks: list[str], in_reasoning: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(THINK, in_reasoning)
    thought = answer = ""
    for chunk in chunks:
        t, a = splitter.feed(chunk)
        thought, answer = thought + t, answer + a
    t, a = splitter.flush()
    return thought + t, answer + a


def test_reasoning_split_across_chunk_boundaries() -> None:
    assert _split(["<th", "ink>plan", " more</th", "ink>\n\n", "Answer"]) == ("plan more", "Answer")
    assert _split(["still thinking</think>", "done"], in_reasoning=True) == ("still thinking", "done")
    assert _split(["Hello <th", "ere"]) == ("", "Hello <there")  # no block after an answer started
    assert _split(["cut off mid-thou"], in_reasoning=True) == ("cut off mid-thou", "")


def test_thinking_enabled_follows_the_prompt_and_template_kwargs() -> None:
    assert thinking_enabled(THINK, "<|im_start|>assistant\n", {})
    assert thinking_enabled(THINK, "Assistant: <think>\n", {"enable_thinking": False})  # left open
    assert not thinking_enabled(THINK, "assistant\n<think>\n\n</think>\n\n", {})
    assert not thinking_enabled(THINK, "assistant\n", {"enable_thinking": False})
    assert not thinking_enabled(None, "anything", {})


def test_llama_json_tool_calls_are_found_with_or_without_the_python_tag() -> None:
    fmt = ToolFormat(start=None, end=None, parser=_parse_llama_json, arguments_key="parameters")
    for text in ['{"name": "f", "parameters": {"x": 1}}', LLAMA_PYTHON_TAG + '{"name": "f", "parameters": {"x": 1}}']:
        extractor = ToolCallExtractor(fmt, [])
        visible = "".join(extractor.feed(piece) for piece in [text[:3], text[3:]])
        calls, unparsed, _ = extractor.finish(cut=False)
        assert visible == "" and unparsed == ""
        assert [(c.name, c.arguments_json) for c in calls] == [("f", '{"x": 1}')]
    plain = ToolCallExtractor(fmt, [])
    visible = plain.feed("The answer") + plain.feed(" is 4")
    calls, rest, _ = plain.finish(cut=False)
    assert visible + rest == "The answer is 4" and calls == []


async def test_a_token_id_prompt_echoes_its_text(stub) -> None:
    ids = (await stub.Tokenize(pb.TokenizeRequest(model="llama", text="Hello world",
                                                  add_special_tokens=False))).token_ids
    request = pb.GenerateRequest(model="llama", token_ids=pb.TokenIds(ids=ids))
    request.stopping.max_tokens = 1
    request.options.echo_input = True
    assert (await stub.Generate(request)).input.text == "Hello world"


async def test_a_forced_tool_call_cut_off_leaks_no_markup(stub) -> None:
    request = pb.GenerateRequest(model="llama")
    request.chat.messages.add(role="user").content.add(text="hi")
    request.tools.add(type="function", function=pb.FunctionDefinition(
        name="get_weather", parameters_json='{"type": "object", "properties": {"city": {"type": "string"}}}'))
    request.tool_choice.mode = pb.ToolChoice.MODE_REQUIRED
    request.stopping.max_tokens = 6
    reply = await stub.Generate(request)
    assert reply.finish.reason == pb.STOP_REASON_LENGTH and not reply.finish.tool_calls
    assert "<tool_call>" not in reply.text and reply.text == ""


async def test_logprob_text_offsets_index_the_generated_text(stub) -> None:
    request = text_request(max_tokens=12, ignore_eos=True)
    request.options.logprobs = True
    reply = await stub.Generate(request)
    offsets = [lp.text_offset for lp in reply.logprobs]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < len(reply.text)
    for lp, start in zip(reply.logprobs, offsets, strict=True):
        assert reply.text[start:].encode().lstrip().startswith(lp.token_bytes.lstrip())
