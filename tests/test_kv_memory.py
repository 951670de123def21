"""KV-cache memory: quantized KV (--kv-bits), rotating KV (--max-kv-size), per-model options."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from mlxrpc.demo_model import TextModelSpec, ensure_text_model
from mlxrpc.engine.batching import ModelBatch
from mlxrpc.engine.kv_cache import KVLayout, kv_bytes_per_token
from mlxrpc.engine.model_options import kv_layout
from mlxrpc.engine.params import ResolvedSampling
from mlxrpc.settings import Settings
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .helpers import text_request

# head_dim 32: the smallest quantization group (32) divides it.
WIDE_SPEC = TextModelSpec(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, seed=5)
GREEDY = ResolvedSampling(0.0, 1.0, 0, 0.0, None, 0.0, 0.0, {}, 0)


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_text_model(tmp_path_factory.mktemp("models") / "wide", WIDE_SPEC)


@pytest.fixture(scope="module")
def wide_model(wide_dir: Path) -> Any:
    import mlx_lm

    return mlx_lm.load(str(wide_dir))[0]


def _prompts(n: int, seed: int = 0) -> list[list[int]]:
    r = random.Random(seed)
    return [[r.randrange(WIDE_SPEC.vocab_size) for _ in range(r.randrange(20, 160))] for _ in range(n)]


def _generate(batch: ModelBatch, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], list[int], int]:
    """Greedy tokens per prompt, cached prompt tokens per prompt, and the peak KV bytes of the batch."""
    order, cached, out = {}, [], [[] for _ in prompts]
    for i, p in enumerate(prompts):
        uid, hit = batch.insert(p, max_tokens=max_tokens, sampling=GREEDY, processors=[], stop_token_ids=[],
                                vocab_size=WIDE_SPEC.vocab_size)
        order[uid] = i
        cached.append(hit)
    peak = 0
    while len(batch):
        _, tokens = batch.step()
        peak = max(peak, batch.kv_bytes)
        for t in tokens:
            out[order[t.uid]].append(t.token)
    return out, cached, peak


def _agreement(a: list[int], b: list[int]) -> int:
    """Tokens until the first difference."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def _batch(model: Any, kv: KVLayout, cache: bool = False, prefill_batch: int = 8) -> ModelBatch:
    return ModelBatch(model, max_num_seqs=8, prefill_batch_size=prefill_batch, prefill_step_size=64,
                      prompt_cache_size=8 if cache else 0, prompt_cache_bytes=1 << 30 if cache else 0, kv=kv)


def test_8bit_kv_agrees_with_full_precision_in_a_batch_and_takes_less_memory(wide_model: Any) -> None:
    prompts = _prompts(5)
    full, _, full_peak = _generate(_batch(wide_model, KVLayout()), prompts, 64)
    kv = KVLayout(bits=8, group_size=32)
    q8, _, q8_peak = _generate(_batch(wide_model, kv), prompts, 64)
    # Batching (padding, merging, rows leaving) changes nothing: each row is
    # what it would be alone.
    assert q8 == [_generate(_batch(wide_model, kv), [p], 64)[0][0] for p in prompts]
    # Sequences waiting for prefill (empty quantized caches) and joining a running batch.
    assert _generate(_batch(wide_model, kv, prefill_batch=2), prompts, 64)[0] == q8
    # Random weights leave near-ties that 8-bit rounding flips (mlx-lm's own
    # QuantizedKVCache flips the same ones); a wrong mask diverges at once.
    agreed = [_agreement(a, b) for a, b in zip(q8, full, strict=True)]
    assert sum(a == 64 for a in agreed) >= 3 and sum(agreed) >= 0.6 * 64 * len(prompts), agreed
    # float32 KV → 8 bits plus a float32 scale and bias per 32 values: 10/32 of the bytes.
    assert q8_peak <= 0.32 * full_peak
    _, _, q4_peak = _generate(_batch(wide_model, KVLayout(bits=4, group_size=32)), prompts, 4)
    assert q4_peak < q8_peak


def test_quantized_entries_of_the_prefix_cache_are_reused_with_the_same_output(wide_model: Any) -> None:
    kv = KVLayout(bits=8, group_size=32)
    batch = _batch(wide_model, kv, cache=True)
    shared = _prompts(1, seed=1)[0]
    _generate(batch, [shared], 4)
    followers = [shared + p[:30] for p in _prompts(3, seed=2)]
    with_cache, cached, _ = _generate(batch, followers, 24)
    assert all(c >= len(shared) for c in cached)
    assert batch.cache_bytes > 0
    reference, _, _ = _generate(_batch(wide_model, kv), followers, 24)
    assert with_cache == reference


def test_rotating_kv_bounds_the_cache_of_long_sequences(wide_model: Any) -> None:
    r = random.Random(3)
    prompts = [[r.randrange(WIDE_SPEC.vocab_size) for _ in range(n)] for n in (600, 650, 700)]
    window = 128
    kv = KVLayout(max_size=window)
    tokens, _, peak = _generate(_batch(wide_model, kv), prompts, 40)
    assert tokens == [_generate(_batch(wide_model, kv), [p], 40)[0][0] for p in prompts]
    _, _, full_peak = _generate(_batch(wide_model, KVLayout()), prompts, 40)
    per_token = kv_bytes_per_token({"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                    "hidden_size": 128}, KVLayout(), 4)
    assert full_peak >= 3 * 640 * per_token
    # Each row holds the window plus at most one prefill chunk (64 tokens).
    assert peak <= 3 * (window + 64) * per_token


def test_kv_options_resolve_per_model_and_reject_bad_values() -> None:
    settings = Settings(kv_bits=["8", "small=4"], kv_group_size=["small=32"], max_kv_size=["long=4096"])
    assert kv_layout(settings, "small") == KVLayout(bits=4, group_size=32)
    assert kv_layout(settings, "other") == KVLayout(bits=8, group_size=64)
    with pytest.raises(ValueError, match="cannot be combined"):
        kv_layout(settings, "long")
    assert kv_layout(Settings(max_kv_size=["long=4096"]), "long") == KVLayout(max_size=4096)
    for bad, match in ((Settings(kv_bits=["3"]), "4 or 8"), (Settings(kv_bits=["x"]), "not an integer"),
                       (Settings(kv_bits=["8"], kv_group_size=["48"]), "group-size"),
                       (Settings(max_kv_size=["0"]), "positive")):
        with pytest.raises(ValueError, match=match):
            kv_layout(bad, "m")


async def test_server_with_8bit_kv_generates_what_full_precision_does(make_stack, wide_dir: Path,
                                                                      model_dir: Path) -> None:
    stack = make_stack([f"wide={wide_dir}", f"full={wide_dir}"], http=False, kv_bits=["wide=8"],
                       kv_group_size=["wide=32"])
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        quantized = await stub.Generate(text_request(model="wide", max_tokens=24, ignore_eos=True))
        full = await stub.Generate(text_request(model="full", max_tokens=24, ignore_eos=True))
        assert quantized.token_ids == full.token_ids


def test_a_group_size_that_does_not_divide_the_head_dimension_fails_the_load(make_stack, model_dir: Path) -> None:
    # The demo model's head dimension is 16.
    with pytest.raises(Exception, match="does not divide the head dimension 16"):
        make_stack([f"llama={model_dir}"], http=False, kv_bits=["8"], kv_group_size=["32"])


async def test_a_burst_needing_4x_the_kv_budget_waits_for_room_and_refuses_what_never_fits(
        make_stack, wide_dir: Path) -> None:
    import asyncio

    import requests

    from mlxrpc.v1 import inference_pb2 as pb

    budget = 1 << 20  # the wide model's KV: 1 KiB a token (float32) → 1024 tokens
    stack = make_stack([f"wide={wide_dir}"], kv_cache_bytes=budget, max_num_seqs=16, prefill_batch_size=16)
    # Each fits in one 256-token step (256 KiB): 16 of them want 4 MiB, 4× the budget.
    fitting = [text_request(f"Request {i}: " + "some words " * 30, model="wide", max_tokens=100,
                            ignore_eos=True) for i in range(16)]
    # 200 + 1800 tokens → 2 MiB: more than the whole budget.
    never = [text_request("too much " * 60, model="wide", max_tokens=1800) for _ in range(2)]
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)

        async def call(request: Any) -> Any:
            try:
                return await stub.Generate(request)
            except grpc.aio.AioRpcError as exc:
                return exc

        results = await asyncio.gather(*(call(r) for r in [*fitting[:8], *never, *fitting[8:]]))
        done = [r for r in results if not isinstance(r, grpc.aio.AioRpcError)]
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(done) == 16 and all(len(r.token_ids) == 100 for r in done)
        assert [e.code() for e in refused] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
        assert f"budget (--kv-cache-bytes) is {budget} bytes" in refused[0].details()
        core = stack.engine.core
        assert budget // 2 < core.kv_budget.peak_reserved <= budget
        assert core.stats.peak_running <= 4
        stack.wait_idle()
        info = (await stub.ModelInfo(pb.ModelInfoRequest(model="wide"))).kv_cache
        assert (info.bytes_per_token, info.budget_bytes, info.reserved_bytes) == (1024, budget, 0)
        assert info.cached_bytes > 0  # the prefix cache kept the finished sequences
    r = requests.post(f"{stack.http_base}/v1/completions", timeout=30,
                      json={"model": "wide", "prompt": "too much " * 60, "max_tokens": 1800})
    assert r.status_code == 400 and "KV budget" in r.text
    metrics = requests.get(f"{stack.http_base}/metrics", timeout=10).text
    assert 'mlxrpc_kv_cache_bytes{model="wide",state="reserved"} 0.0' in metrics
    assert "mlxrpc_kv_budget_bytes 1.048576e+06" in metrics
