"""Detokenize(ids) is the generated text of ids, byte tokens included, on real vocabularies.

transformers' ``decode`` is the reference: the token for byte 0x00 (``Ā``
in byte-level BPE vocabularies) is the character U+0000, a leading
``Ġ``-space is kept, byte-fallback pieces (``<0x00>``) are bytes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from mlxrpc.engine.detokenizer import IncrementalDetokenizer
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack, start_stack, stop_stack

FAMILIES = ("qwen3", "llama3.1", "phi3.5")
TEXT = "héllo wörld \x00\x01\x7f ok ✓ 你好 🙂"


def byte_tokens(tokenizer) -> list[int]:
    """Ids of single-byte tokens: byte-level (Ā, Ã...) or byte-fallback (<0x00>, <0xC3>...)."""
    vocab = tokenizer.get_vocab()
    pieces = ["Ā", "ā", "Ã", "ð", "Ł", "ĉ", "Ġ"] + [f"<0x{b:02X}>" for b in (0, 1, 0xC3, 0xE4, 0xF0, 0x9F, 0x20)]
    return [vocab[p] for p in pieces if p in vocab]


@pytest.fixture(scope="module")
def zoo(zoo_model: Callable[[str], Path]) -> Iterator[Stack]:
    s = start_stack([f"{f}={zoo_model(f)}" for f in FAMILIES], http=False)
    yield s
    stop_stack(s)


@pytest.mark.parametrize("family", FAMILIES)
def test_streamed_text_is_the_tokenizers_decode(zoo: Stack, family: str) -> None:
    tokenizer = zoo.engine.registry.get(family).tokenizer
    rng = random.Random(7)
    specials = set(tokenizer.all_special_ids)
    plain = [i for i in range(len(tokenizer)) if i not in specials]
    bytes_ = byte_tokens(tokenizer)
    assert bytes_, "the vocabulary has byte tokens"
    encoded = tokenizer.encode(TEXT, add_special_tokens=False)
    for _ in range(40):
        ids = [rng.choice(plain if rng.random() < 0.5 else bytes_) for _ in range(rng.randint(1, 12))]
        ids = rng.choice([ids, encoded[: rng.randint(1, len(encoded))] + ids, ids + encoded])
        detokenizer = IncrementalDetokenizer(tokenizer)
        streamed = ""
        for token in ids:
            detokenizer.add_token(token)
            streamed += detokenizer.last_segment
        detokenizer.finalize()
        assert streamed + detokenizer.last_segment == tokenizer.decode(ids), ids


async def _generate_and_detokenize(stack: Stack, family: str, bias: dict[int, float], seed: int):
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        request = pb.GenerateRequest(model=family, text="Hello")
        request.stopping.max_tokens = 24
        request.sampling.temperature = 1.0
        request.sampling.seed = seed
        for token, value in bias.items():
            request.sampling.logit_bias[token] = value
        reply = await stub.Generate(request)
        detok = await stub.Detokenize(pb.DetokenizeRequest(model=family, token_ids=reply.token_ids,
                                                           skip_special_tokens=True))
        return reply, detok.text


@pytest.mark.parametrize("family", FAMILIES)
def test_detokenize_equals_generated_text(zoo: Stack, family: str) -> None:
    tokenizer = zoo.engine.registry.get(family).tokenizer
    bias = {t: 12.0 for t in byte_tokens(tokenizer)}
    zero = tokenizer.get_vocab().get("Ā", tokenizer.get_vocab().get("<0x00>"))
    generated, texts = [], ""
    for seed in range(3):
        reply, text = zoo._thread.run(_generate_and_detokenize(zoo, family, bias, seed))  # type: ignore[union-attr]
        assert reply.text == text
        generated += reply.token_ids
        texts += reply.text
    assert sum(t in bias for t in generated) > 10  # the byte tokens were generated
    assert zero in generated and "\x00" in texts  # byte 0's token is U+0000 in the text
