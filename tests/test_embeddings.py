"""Embeddings end to end: /v1/embeddings (openai SDK, raw HTTP, LangChain) and gRPC Embed,
on tiny embedding checkpoints built in the layouts real ones ship in."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import openai
import pytest

from mlxrpc.demo_embedding_model import (
    BERT_EMBEDDING_SPEC,
    QWEN3_EMBEDDING_SPEC,
    EmbeddingModelSpec,
    ensure_embedding_model,
)
from mlxrpc.engine.embeddings import EmbeddingSpec, Pooling, embedding_spec, plan_batches
from mlxrpc.engine.errors import EngineError
from mlxrpc.gateway.embeddings.routes import ERRORS
from mlxrpc.gateway.embeddings.translate import encode, to_inputs
from mlxrpc.gateway.http.errors import ApiError
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack
from .helpers import bad_request_field, chat_request, require_module

HAS_ENCODERS = importlib.util.find_spec("mlx_embeddings") is not None
# Inputs of different lengths, so a batch pads most of them.
ADMIN = {"Authorization": "Bearer admin"}
TEXTS = ["hello world", "the capital of france is paris", "a", "similar texts get similar vectors . " * 3]


@pytest.fixture(scope="module")
def emb_stack(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Stack]:
    """emb: Qwen3-Embedding-shaped (last token, matryoshka); mean: qwen3 with mean pooling;
    bert: bge-shaped encoder (CLS); llama: a text model."""
    from .conftest import start_stack, stop_stack

    root = tmp_path_factory.mktemp("embedding-models")
    models = [f"emb={ensure_embedding_model(root / 'qwen3', QWEN3_EMBEDDING_SPEC)}",
              f"mean={ensure_embedding_model(root / 'mean', EmbeddingModelSpec(pooling='mean', seed=3))}",
              f"llama={model_dir}"]
    if HAS_ENCODERS:
        models.append(f"bert={ensure_embedding_model(root / 'bert', BERT_EMBEDDING_SPEC)}")
    stack = start_stack(models, admin_key="admin")
    yield stack
    stop_stack(stack)


@pytest.fixture
def sdk(emb_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{emb_stack.http_base}/v1", api_key="x", max_retries=0)


@pytest.fixture
async def stub(emb_stack: Stack):
    async with grpc.aio.insecure_channel(emb_stack.grpc_target) as channel:
        yield pb_grpc.InferenceStub(channel)


def floats(sdk: openai.OpenAI, inputs, model: str = "emb", **kw) -> np.ndarray:
    reply = sdk.embeddings.create(model=model, input=inputs, encoding_format="float", **kw)
    assert [d.index for d in reply.data] == list(range(len(reply.data)))
    return np.array([d.embedding for d in reply.data])


async def post(stack: Stack, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.post(f"{stack.http_base}/v1/embeddings", json=body) as r:
        return r.status, await r.json()


# ------------------------------------------------------------------ models


def test_embedding_models_are_listed_with_kind_and_dimensions(sdk: openai.OpenAI, emb_stack: Stack) -> None:
    models = {m.id: m.model_dump() for m in sdk.models.list().data}
    assert models["emb"]["kind"] == "embedding"
    assert models["emb"]["embedding_dimensions"] == 64
    assert models["emb"]["capabilities"] == ["embeddings"]
    assert models["llama"]["kind"] == "text" and "embedding_dimensions" not in models["llama"]
    if HAS_ENCODERS:
        assert models["bert"]["kind"] == "embedding"
        assert models["bert"]["embedding_dimensions"] == 64


async def test_grpc_model_info_of_an_embedding_model(stub) -> None:
    info = await stub.ModelInfo(pb.ModelInfoRequest(model="emb"))
    assert info.kind == pb.MODEL_KIND_EMBEDDING
    assert info.embedding_dimensions == 64 and list(info.capabilities) == ["embeddings"]
    assert info.context_length == QWEN3_EMBEDDING_SPEC.max_position_embeddings


# ------------------------------------------------------------------ vectors


@pytest.mark.parametrize("model", ["emb", "mean", "bert"])
def test_vectors_are_unit_length_distinct_and_batch_equals_one_by_one(sdk: openai.OpenAI, model: str) -> None:
    if model == "bert":
        require_module("mlx_embeddings")
    together = floats(sdk, TEXTS, model)
    alone = np.stack([floats(sdk, text, model)[0] for text in TEXTS])
    assert together.shape == (len(TEXTS), 64)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # Different texts give different vectors (padding did not wash them out).
    assert np.abs(together[0] - together[1]).max() > 1e-3


def test_usage_counts_the_tokens_with_special_tokens(sdk: openai.OpenAI, stub, emb_stack: Stack) -> None:
    reply = sdk.embeddings.create(model="emb", input=TEXTS[:2], encoding_format="float")
    counts = [len(emb_stack.engine.registry.get("emb").tokenizer.encode(t)) for t in TEXTS[:2]]
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == sum(counts)
    assert reply.model == "emb" and reply.object == "list" and reply.data[0].object == "embedding"


def test_the_decoder_pools_the_appended_end_token(emb_stack: Stack) -> None:
    """Qwen3-Embedding's tokenizer appends <|endoftext|>: the vector is that token's state."""
    tokenizer = emb_stack.engine.registry.get("emb").tokenizer
    assert tokenizer.encode("hello")[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_sdk_default_base64_is_decoded_to_the_same_floats(sdk: openai.OpenAI) -> None:
    expected = floats(sdk, TEXTS)
    decoded = sdk.embeddings.create(model="emb", input=TEXTS)  # the SDK asks for base64 and decodes it
    np.testing.assert_array_equal(np.array([d.embedding for d in decoded.data]), expected.astype(np.float32))
    raw = sdk.embeddings.create(model="emb", input=TEXTS[0], encoding_format="base64")
    assert isinstance(raw.data[0].embedding, str)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(raw.data[0].embedding), "<f4"),
                                  expected[0].astype(np.float32))


async def test_base64_bytes_are_little_endian_float32(emb_stack: Stack) -> None:
    status, as_float = await post(emb_stack, {"model": "emb", "input": ["a", "b"]})
    assert status == 200
    status, as_b64 = await post(emb_stack, {"model": "emb", "input": ["a", "b"], "encoding_format": "base64"})
    assert status == 200
    for f, b in zip(as_float["data"], as_b64["data"], strict=True):
        raw = base64.b64decode(b["embedding"])
        assert len(raw) == 64 * 4
        np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), np.array(f["embedding"], np.float32))
    assert as_b64["usage"] == as_float["usage"]


def test_token_id_inputs_embed_like_their_text(sdk: openai.OpenAI, emb_stack: Stack) -> None:
    tokenizer = emb_stack.engine.registry.get("emb").tokenizer
    ids = [tokenizer.encode(t) for t in TEXTS[:2]]
    by_text = floats(sdk, TEXTS[:2])
    np.testing.assert_allclose(floats(sdk, ids), by_text, atol=1e-6)
    np.testing.assert_allclose(floats(sdk, ids[0]), by_text[:1], atol=1e-6)


def test_dimensions_truncate_then_renormalise(sdk: openai.OpenAI) -> None:
    full = floats(sdk, TEXTS)
    short = floats(sdk, TEXTS, dimensions=16)
    assert short.shape == (len(TEXTS), 16)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)
    assert floats(sdk, "a", dimensions=64).shape == (1, 64)


async def test_concurrent_requests_each_get_their_own_vectors(emb_stack: Stack, sdk: openai.OpenAI) -> None:
    expected = await asyncio.to_thread(floats, sdk, TEXTS)
    client = openai.AsyncOpenAI(base_url=f"{emb_stack.http_base}/v1", api_key="x", max_retries=0)
    replies = await asyncio.gather(*(client.embeddings.create(model="emb", input=t) for t in TEXTS * 3))
    got = np.array([r.data[0].embedding for r in replies])
    np.testing.assert_allclose(got, np.concatenate([expected] * 3), atol=1e-5)


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"model": "llama", "input": "hi"}, 400, "model"),
    ({"model": "emb", "input": "hi " * 200}, 400, "input[0]"),
    ({"model": "emb", "input": ["ok", "hi " * 200]}, 400, "input[1]"),
    ({"model": "emb", "input": ""}, 400, "input[0]"),
    ({"model": "emb", "input": ["a", ""]}, 400, "input[1]"),
    ({"model": "emb", "input": []}, 400, "input"),
    ({"model": "emb", "input": [[]]}, 400, "input[0]"),
    ({"model": "emb", "input": ["a"] * 2049}, 400, "input"),
    ({"model": "emb", "input": [5, 99999]}, 400, "input[0]"),
    ({"model": "emb", "input": [[1, 2], [-1]]}, 400, "input[1]"),
    ({"model": "emb", "input": [1, "a"]}, 400, "input[0]"),
    ({"model": "emb", "input": [True]}, 400, "input[0]"),
    ({"model": "emb", "input": [[1.5]]}, 400, "input[0]"),
    ({"model": "emb", "input": {"text": "a"}}, 400, "input"),
    ({"model": "emb", "input": 5}, 400, "input"),
    ({"model": "emb"}, 400, "input"),
    ({"model": "emb", "input": "a", "dimensions": 65}, 400, "dimensions"),
    ({"model": "emb", "input": "a", "dimensions": 0}, 400, "dimensions"),
    ({"model": "emb", "input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ({"model": "nope", "input": "a"}, 404, "model"),
])
async def test_bad_requests_get_openai_errors(emb_stack: Stack, body: dict, status: int, param: str) -> None:
    got, reply = await post(emb_stack, body)
    assert got == status, reply
    assert reply["error"]["param"] == param, reply
    assert reply["error"]["message"] and reply["error"]["type"]


async def test_dimensions_need_a_matryoshka_model(emb_stack: Stack) -> None:
    require_module("mlx_embeddings")
    got, reply = await post(emb_stack, {"model": "bert", "input": "a", "dimensions": 16})
    assert got == 400 and reply["error"]["param"] == "dimensions"
    assert "does not support" in reply["error"]["message"]
    got, reply = await post(emb_stack, {"model": "bert", "input": "a", "dimensions": 64})
    assert got == 200 and len(reply["data"][0]["embedding"]) == 64


async def test_the_too_long_error_names_the_input_and_the_context(emb_stack: Stack) -> None:
    _, reply = await post(emb_stack, {"model": "emb", "input": ["ok", "hi " * 200]})
    assert reply["error"]["message"].startswith("input[1] has ")
    assert "context length of 128" in reply["error"]["message"]
    assert reply["error"]["code"] == "context_length_exceeded"


def test_chat_with_an_embedding_model_is_a_400(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="emb", messages=[{"role": "user", "content": "hi"}])
    assert "embedding model" in caught.value.message
    with pytest.raises(openai.BadRequestError):
        sdk.completions.create(model="emb", prompt="hi")


# ------------------------------------------------------------------ gRPC


async def test_grpc_embed_mixes_texts_and_token_ids(stub, emb_stack: Stack) -> None:
    ids = emb_stack.engine.registry.get("emb").tokenizer.encode("hello world")
    request = pb.EmbedRequest(model="emb", dimensions=32, inputs=[
        pb.EmbedInput(text="hello world"), pb.EmbedInput(token_ids=pb.TokenIds(ids=ids))])
    reply = await stub.Embed(request)
    assert reply.model == "emb" and len(reply.embeddings) == 2
    first, second = (np.array(e.values) for e in reply.embeddings)
    assert first.shape == (32,)
    np.testing.assert_allclose(first, second, atol=1e-6)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == 2 * len(ids)


async def test_grpc_embed_errors_carry_codes_and_fields(stub) -> None:
    cases = [
        (pb.EmbedRequest(model="emb"), grpc.StatusCode.INVALID_ARGUMENT, "inputs"),
        (pb.EmbedRequest(model="emb", inputs=[pb.EmbedInput()]), grpc.StatusCode.INVALID_ARGUMENT, "inputs[0]"),
        (pb.EmbedRequest(model="llama", inputs=[pb.EmbedInput(text="a")]), grpc.StatusCode.INVALID_ARGUMENT,
         "model"),
        (pb.EmbedRequest(model="nope", inputs=[pb.EmbedInput(text="a")]), grpc.StatusCode.NOT_FOUND, "model"),
    ]
    for request, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(request)
        assert caught.value.code() == code
        assert bad_request_field(caught.value) == field


async def test_grpc_generate_on_an_embedding_model_is_invalid(stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(chat_request(model="emb"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_embedding_model_loaded_while_serving(emb_stack: Stack, tmp_path: Path) -> None:
    path = ensure_embedding_model(tmp_path / "late", EmbeddingModelSpec(seed=9, hidden_size=32))
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(f"{emb_stack.http_base}/v1/models", json={"model": str(path), "id": "late"}) as r:
            assert r.status == 201
            assert (await r.json())["kind"] == "embedding"
        try:
            status, reply = await post(emb_stack, {"model": "late", "input": "a"})
            assert status == 200 and len(reply["data"][0]["embedding"]) == 32
        finally:
            async with session.delete(f"{emb_stack.http_base}/v1/models/late") as r:
                assert r.status == 200


# ------------------------------------------------------------------ LangChain


def test_langchain_openai_embeddings(emb_stack: Stack, sdk: openai.OpenAI) -> None:
    """LangChain unmodified, told to send text (by default it sends tiktoken's
    cl100k ids, which only OpenAI's own models understand)."""
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(base_url=f"{emb_stack.http_base}/v1", api_key="x", model="emb",
                                  check_embedding_ctx_length=False)
    documents = embeddings.embed_documents(TEXTS)
    query = embeddings.embed_query(TEXTS[1])
    expected = floats(sdk, TEXTS)
    np.testing.assert_allclose(np.array(documents), expected, atol=1e-6)
    np.testing.assert_allclose(np.array(query), expected[1], atol=1e-6)


def test_langchain_with_its_own_length_check_on_the_models_tokenizer(emb_stack: Stack, sdk: openai.OpenAI) -> None:
    """The length check kept, offline: LangChain splits with the checkpoint's own
    tokenizer (a local path) and sends the pieces as text."""
    from langchain_openai import OpenAIEmbeddings

    path = emb_stack.settings.model[0].partition("=")[2]
    embeddings = OpenAIEmbeddings(base_url=f"{emb_stack.http_base}/v1", api_key="x", model="emb",
                                  tiktoken_enabled=False, tiktoken_model_name=path)
    np.testing.assert_allclose(np.array(embeddings.embed_documents(TEXTS[:2])), floats(sdk, TEXTS[:2]), atol=1e-6)


# ------------------------------------------------------------------ pure pieces


def test_rest_inputs_translate_to_proto() -> None:
    assert [i.text for i in to_inputs("a")] == ["a"]
    assert [i.text for i in to_inputs(["a", "b"])] == ["a", "b"]
    assert [list(i.token_ids.ids) for i in to_inputs([1, 2])] == [[1, 2]]
    assert [list(i.token_ids.ids) for i in to_inputs([[1], [2, 3]])] == [[1], [2, 3]]
    mixed = to_inputs(["a", [4]])
    assert mixed[0].WhichOneof("input") == "text" and mixed[1].WhichOneof("input") == "token_ids"
    assert to_inputs([]) == []
    for bad, param in [([1, "a"], "input[0]"), ([[1], [2**32]], "input[1]"), ([None], "input[0]")]:
        with pytest.raises(ApiError) as caught:
            to_inputs(bad)
        assert caught.value.param == param


def test_base64_is_little_endian_float32() -> None:
    values = [1.0, -2.5, 0.1]
    raw = base64.b64decode(encode(values, "base64"))
    assert raw[:4] == b"\x00\x00\x80\x3f"
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), np.array(values, np.float32))
    assert encode(values, None) == values == encode(values, "float")


def test_rest_errors_name_the_rest_field() -> None:
    error = ERRORS.renamed(ApiError(400, "inputs[3] has 9 tokens", param="inputs[3]"))
    assert (error.param, error.message) == ("input[3]", "input[3] has 9 tokens")


def test_output_size_rules() -> None:
    plain = EmbeddingSpec(Pooling.CLS, 64, encoder=True)
    any_size = EmbeddingSpec(Pooling.LAST, 64, encoder=False, matryoshka=None)
    listed = EmbeddingSpec(Pooling.LAST, 64, encoder=False, matryoshka=(16, 32))
    assert plain.output_size(0) == plain.output_size(64) == 64
    assert any_size.output_size(7) == 7 and listed.output_size(32) == 32
    for spec, size in [(plain, 16), (any_size, 65), (listed, 8)]:
        with pytest.raises(EngineError) as caught:
            spec.output_size(size)
        assert caught.value.field == "dimensions"


def test_batches_group_similar_lengths_within_the_budget() -> None:
    lengths = [5, 100, 6, 90, 7, 3000]
    batches = plan_batches(lengths, budget=300, most=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 300 or len(b) == 1 for b in batches)
    assert all(len(b) <= 2 for b in batches)
    assert [5] in batches  # too long for any batch: alone


def test_kind_detection(tmp_path: Path, model_dir: Path) -> None:
    text_config = json.loads((model_dir / "config.json").read_text())
    assert embedding_spec(model_dir, text_config) is None
    assert embedding_spec(tmp_path, {"model_type": "bert", "hidden_size": 8}) == EmbeddingSpec(
        Pooling.CLS, 8, encoder=True)
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(EngineError, match="Dense"):
        embedding_spec(tmp_path, {"model_type": "qwen3", "hidden_size": 8})


def test_the_docs_table_matches_the_schema_and_proto() -> None:
    from mlxrpc.gateway.embeddings.protocol import EmbeddingRequest

    from .test_docs import section

    rows = re.findall(r"^\| `([^`]+)` \| (`[^`]+`|—) \|", section("Embeddings"), re.M)
    assert {rest for rest, _ in rows} == set(EmbeddingRequest.model_fields)
    for _, proto in rows:
        assert proto == "—" or proto.strip("`") in pb.EmbedRequest.DESCRIPTOR.fields_by_name, proto


def test_roberta_positions_leave_room_for_the_padding_offset(tmp_path: Path) -> None:
    config = {"model_type": "xlm-roberta", "hidden_size": 8, "max_position_embeddings": 514, "pad_token_id": 1}
    assert embedding_spec(tmp_path, config).max_tokens == 512


@pytest.mark.parametrize(("modes", "expected"), [
    ({"pooling_mode_mean_tokens": True}, Pooling.MEAN),
    ({"pooling_mode_lasttoken": True}, Pooling.LAST),
    ({"pooling_mode_cls_token": True}, Pooling.CLS),
    ({"pooling_mode_max_tokens": True}, None),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, None),
])
def test_pooling_comes_from_the_sentence_transformers_config(tmp_path: Path, modes: dict, expected) -> None:
    (tmp_path / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    config = {"model_type": "qwen3", "hidden_size": 8}
    if expected is None:
        with pytest.raises(EngineError, match="unsupported pooling"):
            embedding_spec(tmp_path, config)
    else:
        assert embedding_spec(tmp_path, config).pooling is expected
