"""The prefix cache's disk tier (--prompt-cache-dir): reuse after a restart, bad files skipped."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import grpc
import pytest

from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import start_stack, stop_stack
from .helpers import text_request

LONG = "An agent's long system prompt with tool definitions and rules. " * 40


async def _generate(stack, prompt: str = LONG, model: str = "llama") -> tuple[list[int], int, int]:
    """(token ids, prompt tokens, cached tokens) of one greedy request."""
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        r = await pb_grpc.InferenceStub(channel).Generate(
            text_request(prompt, model=model, max_tokens=8, ignore_eos=True))
    return list(r.token_ids), r.finish.usage.prompt_tokens, r.finish.usage.cached_tokens


def _serve(model_dir: Path, cache_dir: Path, **overrides):
    return start_stack([f"llama={model_dir}"], http=False, prompt_cache_dir=str(cache_dir), **overrides)


def _files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/*.safetensors"))


async def test_a_long_prompt_is_served_from_disk_after_a_restart(model_dir: Path, tmp_path: Path) -> None:
    first = _serve(model_dir, tmp_path)
    try:
        tokens, prompt_tokens, cached = await _generate(first)
        assert cached == 0 and prompt_tokens > 300
    finally:
        stop_stack(first)
    assert len(_files(tmp_path)) == 1
    again = _serve(model_dir, tmp_path)
    try:
        tokens_again, _, cached_again = await _generate(again)
        assert cached_again >= prompt_tokens - 1
        assert tokens_again == tokens
        assert len(_files(tmp_path)) == 1  # the same tokens again: one entry
        # A longer prompt sharing the prefix reuses it too.
        _, longer_prompt, cached_longer = await _generate(again, LONG + " And one more question?")
        assert prompt_tokens - 8 <= cached_longer < longer_prompt
    finally:
        stop_stack(again)
    assert len(_files(tmp_path)) == 2
    # Another KV layout is another model identity: nothing matches.
    other = _serve(model_dir, tmp_path, max_kv_size=["4096"])
    try:
        assert (await _generate(other))[2] == 0
    finally:
        stop_stack(other)


async def test_corrupt_and_foreign_files_are_skipped_with_a_log_line(model_dir: Path, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    first = _serve(model_dir, tmp_path)
    try:
        tokens, _, _ = await _generate(first)
    finally:
        stop_stack(first)
    (good,) = _files(tmp_path)
    folder = good.parent
    # A file whose arrays are cut off (its header still names this model) …
    truncated = folder / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good.unlink()
    # … garbage, and an entry of another model copied into this model's folder.
    (folder / "garbage.safetensors").write_bytes(b"\xff" * 100)
    foreign_dir = tmp_path / "foreign"
    foreign = _serve(model_dir, foreign_dir, kv_bits=[], max_kv_size=["4096"])
    try:
        await _generate(foreign)
    finally:
        stop_stack(foreign)
    shutil.copy(_files(foreign_dir)[0], folder / "foreign.safetensors")
    caplog.set_level(logging.WARNING, logger="mlxrpc.engine.disk_cache")
    again = _serve(model_dir, tmp_path)
    try:
        tokens_again, _, cached = await _generate(again)
        assert cached == 0 and tokens_again == tokens
        assert (await _generate(again, "A short healthy request."))[0]
    finally:
        stop_stack(again)
    logged = caplog.text
    assert "garbage.safetensors" in logged and "foreign.safetensors" in logged and "another model" in logged
    assert "truncated.safetensors" in logged
