"""A thinking budget closes a reasoning model's thinking block when it is spent.

DeepSeek-R1-Distill's real template opens ``<think>`` in the prompt; the
random-weight model never closes it by itself, so the end marker appearing
exactly after the budget is the budget's doing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from mlxrpc.engine.thinking_budget import EFFORT_BUDGETS
from mlxrpc.v1 import inference_pb2 as pb
from mlxrpc.v1 import inference_pb2_grpc as pb_grpc

from .conftest import Stack, start_stack, stop_stack

END_OF_THINKING = 151649  # </think> in DeepSeek-R1-Distill-Qwen's vocabulary


@pytest.fixture(scope="module")
def r1(zoo_model: Callable[[str], Path]) -> Iterator[Stack]:
    s = start_stack([f"r1={zoo_model('deepseek-r1-qwen')}"])
    yield s
    stop_stack(s)


def request(budget: int = 0, max_tokens: int = 24, effort: str = "") -> pb.GenerateRequest:
    r = pb.GenerateRequest(model="r1", chat=pb.ChatInput(
        messages=[pb.ChatMessage(role="user", content=[pb.ContentPart(text="Why is the sky blue?")])],
        reasoning_effort=effort))
    r.stopping.max_tokens = max_tokens
    r.sampling.seed = 1
    r.thinking_budget_tokens = budget
    return r


async def generate(stack: Stack, r: pb.GenerateRequest) -> pb.GenerateResponse:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        return await pb_grpc.InferenceStub(channel).Generate(r)


def test_the_budget_closes_thinking_and_the_model_answers(r1: Stack) -> None:
    free = r1._thread.run(generate(r1, request()))  # type: ignore[union-attr]
    assert END_OF_THINKING not in free.token_ids and free.reasoning and not free.text
    capped = r1._thread.run(generate(r1, request(budget=6)))  # type: ignore[union-attr]
    assert list(capped.token_ids).index(END_OF_THINKING) == 6
    assert capped.reasoning and capped.text  # thought, then answered within max_tokens
    assert "</think>" not in capped.reasoning + capped.text


def test_reasoning_effort_implies_a_budget(r1: Stack) -> None:
    assert EFFORT_BUDGETS == {"low": 1024, "medium": 4096, "high": 16384}
    reply = r1._thread.run(generate(r1, request(max_tokens=EFFORT_BUDGETS["low"] + 4, effort="low")))  # type: ignore[union-attr]
    assert list(reply.token_ids).index(END_OF_THINKING) == EFFORT_BUDGETS["low"]


def test_anthropic_budget_tokens_is_enforced(r1: Stack) -> None:
    import httpx

    def message(budget: int) -> dict:
        return httpx.post(f"{r1.http_base}/v1/messages", timeout=60, json={
            "model": "r1", "max_tokens": 24, "messages": [{"role": "user", "content": "Why?"}],
            "thinking": {"type": "enabled", "budget_tokens": budget}}).json()

    free, capped = message(1024), message(6)
    # Unbounded, the random model thinks through max_tokens; with the budget it thinks 6 tokens, then answers.
    assert [b["type"] for b in free["content"]] == ["thinking"] and free["stop_reason"] == "max_tokens"
    assert [b["type"] for b in capped["content"]] == ["thinking", "text"]
    thought = [m["usage"]["output_tokens_details"]["thinking_tokens"] for m in (capped, free)]
    assert thought[0] <= 7 < thought[1]
