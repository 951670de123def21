"""Inputs found by fuzzing from outside that got a 5xx: each is the request's fault, a 400 with the reason.

Hermes 3's real vocabulary has ``<tool_call>`` as a special token, so a
grammar forcing that text cannot be followed; llguidance's lexer and parser
limits refuse ``(x{1000}){1000}`` and 10,000 choices. All are known at
admission, before any token is generated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import Stack, start_stack, stop_stack


@pytest.fixture(scope="module")
def served(model_dir: Path, zoo_model: Callable[[str], Path]) -> Iterator[Stack]:
    s = start_stack([f"llama={model_dir}", f"hermes3={zoo_model('hermes3')}"])
    yield s
    stop_stack(s)


def post(stack: Stack, path: str, body: Any) -> tuple[int, dict]:
    async def go() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session, session.post(f"{stack.http_base}{path}", json=body) as r:
            return r.status, await r.json()

    return stack._thread.run(go())  # type: ignore[union-attr]


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, **extra}


@pytest.mark.parametrize(("model", "extra", "param", "says"), [
    ("hermes3", {"guided_regex": "<tool_call>x"}, "response_format.regex", "special token"),
    ("hermes3", {"guided_choice": ["<tool_call>"]}, "response_format.choice", "special token"),
    ("hermes3", {"response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": {
        "type": "object", "properties": {"a": {"const": "<tool_call>"}}, "required": ["a"]}}}},
     "response_format.json_schema", "special token"),
    ("llama", {"guided_regex": "(x{1000}){1000}"}, "response_format.regex", "too many expressions"),
    ("llama", {"guided_choice": [f"choice{i}" for i in range(10_000)]}, "response_format.choice", "row"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_a_grammar_the_model_cannot_follow_is_a_400(served: Stack, model: str, extra: dict, param: str,
                                                    says: str, stream: bool) -> None:
    status, body = post(served, "/v1/chat/completions", chat(model, stream=stream, **extra))
    assert status == 400, body
    assert body["error"]["param"] == param and says in body["error"]["message"]


def test_readiness_of_an_unknown_model_is_a_404(served: Stack) -> None:
    async def ready(model: str) -> tuple[int, dict]:
        async with aiohttp.ClientSession() as session, session.get(
                f"{served.http_base}/ready", params={"model": model}) as r:
            return r.status, await r.json()

    status, body = served._thread.run(ready("nope"))  # type: ignore[union-attr]
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert served._thread.run(ready("llama"))[0] == 200  # type: ignore[union-attr]


@pytest.mark.parametrize("tools", [[{"type": [None, None]}], [{"type": None}], [{"type": {"a": 1}}]])
def test_a_responses_tool_whose_type_is_not_a_string_is_a_400(served: Stack, tools: list) -> None:
    status, body = post(served, "/v1/responses", {"model": "llama", "input": "hi", "tools": tools})
    assert status == 400 and body["error"]["param"] == "tools[0]"
