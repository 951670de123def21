"""Generation over real grpc.aio channels against a real server on port 0."""

from __future__ import annotations

import asyncio

import grpc
import mlx.core as mx
import pytest

from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack
from .helpers import chat_request, text_request


@pytest.fixture
async def stub(stack: Stack):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


async def collect(stub: pb_grpc.InferenceStub, request: pb.GenerateRequest) -> tuple[str, list, pb.Finish]:
    texts, messages, finish = [], [], None
    async for message in stub.StreamGenerate(request):
        texts.append(message.text)
        messages.append(message)
        if message.HasField("finish"):
            finish = message.finish
    assert finish is not None, "the stream ended without a finish message"
    assert messages[-1].HasField("finish"), "finish must be on the last message only"
    return "".join(texts), messages, finish


async def test_unary_generate_returns_text_usage_and_length_stop(stub) -> None:
    reply = await stub.Generate(text_request(max_tokens=12))
    assert reply.text
    assert reply.model == "llama" and reply.request_id
    assert len(reply.token_ids) == 12
    assert reply.finish.reason == pb.STOP_REASON_LENGTH
    usage = reply.finish.usage
    assert usage.completion_tokens == 12 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + 12
    assert reply.finish.timings.time_to_first_token_seconds > 0


async def test_stream_matches_unary_and_first_message_names_the_request(stub) -> None:
    unary = await stub.Generate(text_request(max_tokens=20))
    text, messages, finish = await collect(stub, text_request(max_tokens=20))
    assert text == unary.text
    assert messages[0].request_id and messages[0].model == "llama"
    assert sum(len(m.token_ids) for m in messages) == 20
    assert finish.usage.completion_tokens == 20


async def test_default_alias_and_empty_model_select_the_first_model(stub) -> None:
    a = await stub.Generate(text_request(model="default"))
    b = await stub.Generate(text_request(model=""))
    assert a.model == b.model == "llama"


async def test_chat_text_and_token_ids_inputs_agree(stub) -> None:
    chat = chat_request("What is the capital of France?", max_tokens=10)
    tokens = await stub.Tokenize(pb.TokenizeRequest(model="llama", chat=chat.chat))
    by_chat = await stub.Generate(chat)
    by_ids = pb.GenerateRequest(model="llama", token_ids=pb.TokenIds(ids=tokens.token_ids))
    by_ids.stopping.max_tokens, by_ids.sampling.temperature = 10, 0.0
    by_ids_reply = await stub.Generate(by_ids)
    assert by_chat.text == by_ids_reply.text
    assert by_chat.finish.usage.prompt_tokens == len(tokens.token_ids)
    plain = await stub.Generate(text_request("What is the capital of France?", max_tokens=10))
    assert plain.finish.usage.prompt_tokens < by_chat.finish.usage.prompt_tokens


async def test_echo_input_returns_the_templated_prompt(stub) -> None:
    request = chat_request("Hello", max_tokens=2)
    request.options.echo_input = True
    reply = await stub.Generate(request)
    assert "<|im_start|>user\nHello<|im_end|>" in reply.input.text
    assert len(reply.input.token_ids) == reply.finish.usage.prompt_tokens


async def test_stop_string_split_across_tokens_cuts_output_and_never_leaks(stub) -> None:
    full = await stub.Generate(text_request(max_tokens=40))
    pieces = [(await stub.Detokenize(pb.DetokenizeRequest(model="llama", token_ids=[t]))).text
              for t in full.token_ids]
    # A stop string made of the end of one token and the start of the next.
    boundary = next(i for i in range(5, len(pieces) - 1)
                    if len(pieces[i]) >= 1 and len(pieces[i + 1]) >= 1)
    stop = pieces[boundary][-1:] + pieces[boundary + 1][:1]
    expected = full.text[: full.text.index(stop)]
    text, messages, finish = await collect(stub, text_request(max_tokens=40, stop=[stop]))
    assert text == expected
    assert finish.reason == pb.STOP_REASON_STOP_SEQUENCE and finish.stop_sequence == stop
    assert all(stop not in m.text for m in messages)
    unary = await stub.Generate(text_request(max_tokens=40, stop=[stop]))
    assert unary.text == expected


async def test_stop_token_ids_and_eos_end_generation(stub) -> None:
    info = await stub.ModelInfo(pb.ModelInfoRequest(model="llama"))
    eos = info.eos_token_ids[0]
    forced = text_request(max_tokens=30)
    forced.sampling.logit_bias[eos] = 100.0
    reply = await stub.Generate(forced)
    assert reply.finish.reason == pb.STOP_REASON_EOS and reply.finish.stop_token_id == eos
    assert reply.text == "" and reply.finish.usage.completion_tokens == 1

    forced.stopping.ignore_eos = True
    forced.stopping.max_tokens = 3
    assert (await stub.Generate(forced)).finish.reason == pb.STOP_REASON_LENGTH

    token = (await stub.Generate(text_request(max_tokens=1))).token_ids[0]
    by_id = text_request(max_tokens=30, stop_token_ids=[token])
    by_id.sampling.logit_bias[token] = 100.0
    stopped = await stub.Generate(by_id)
    assert stopped.finish.reason == pb.STOP_REASON_STOP_TOKEN and stopped.finish.stop_token_id == token


async def test_max_tokens_is_capped_by_the_server(stub, stack: Stack) -> None:
    request = text_request(max_tokens=100_000, ignore_eos=True)
    reply = await stub.Generate(request)
    assert reply.finish.usage.completion_tokens == stack.settings.max_tokens
    assert reply.finish.reason == pb.STOP_REASON_LENGTH


async def test_same_seed_same_output_alone_and_batched(stub, stack: Stack) -> None:
    def seeded(seed: int, prompt: str = "Once upon a time") -> pb.GenerateRequest:
        request = text_request(prompt, max_tokens=24, temperature=1.0, ignore_eos=True)
        request.sampling.seed = seed
        return request

    alone = (await stub.Generate(seeded(7))).text
    assert (await stub.Generate(seeded(7))).text == alone
    if mx.default_device().type == mx.DeviceType.gpu:
        # Measured on CUDA (H200): a row's logits depend on the batch it shares,
        # so a seed reproduces alone but not across batch mixes. docs/api.md says so.
        pytest.xfail("GPU kernels are not batch-invariant")
    stack.wait_idle()
    stack.engine.reset_peak()
    others = [seeded(s, "The quick brown fox " * (s % 3 + 1)) for s in range(100, 106)]
    results = await asyncio.gather(stub.Generate(seeded(7)), *(stub.Generate(r) for r in others))
    assert stack.engine.stats().peak_running > 1, "the requests did not share a batch"
    assert results[0].text == alone
    other_seed = (await stub.Generate(seeded(8))).text
    assert other_seed != alone, "different seeds should give different samples"


async def test_concurrent_streams_share_batches(stub, stack: Stack) -> None:
    stack.wait_idle()
    stack.engine.reset_peak()
    requests = [text_request(f"prompt number {i}", max_tokens=32, ignore_eos=True) for i in range(6)]
    replies = await asyncio.gather(*(collect(stub, r) for r in requests))
    assert all(f.usage.completion_tokens == 32 for _, _, f in replies)
    assert stack.engine.stats().peak_running >= 4


async def test_logprobs_and_top_alternatives(stub) -> None:
    request = text_request(max_tokens=5)
    request.options.logprobs = True
    request.options.top_logprobs = 3
    reply = await stub.Generate(request)
    assert len(reply.logprobs) == 5
    for token_id, lp in zip(reply.token_ids, reply.logprobs, strict=True):
        assert lp.token_id == token_id and lp.logprob <= 0
        assert len(lp.top) == 3
        assert lp.top[0].logprob >= lp.top[1].logprob >= lp.top[2].logprob
        # Greedy: the chosen token is the most likely one.
        assert lp.top[0].token_id == token_id


async def test_sampling_parameters_are_accepted(stub) -> None:
    request = text_request(max_tokens=8, temperature=0.7)
    s = request.sampling
    s.top_p, s.top_k, s.min_p, s.seed = 0.9, 20, 0.05, 3
    s.repetition_penalty, s.presence_penalty, s.frequency_penalty = 1.1, 0.5, 0.5
    reply = await stub.Generate(request)
    assert reply.finish.usage.completion_tokens == 8
