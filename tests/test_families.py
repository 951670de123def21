"""Every surface on every family of the zoo: tiny random models that carry the
real tokenizers and chat templates of Qwen3, Qwen3-Coder, Qwen3.5, Llama 3.1, Hermes 3, the
DeepSeek-R1 distills, Phi-3.5, Gemma 4, GLM-4.7 and Granite 4.0 (tests/zoo; the last two on stand-in
vocabularies), served and called over REST as users do. What each family can do follows its own template (FORMATS)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from .conftest import Stack, start_stack, stop_stack
from .zoo.families import FAMILIES as SPECS

# (The Mistral families are in tests/test_tool_matrix.py: one more stack of Tekken-sized
# models here would not start within the fixture's time on a small CPU.)
FAMILIES = ["qwen3", "qwen3-coder", "qwen3.5", "gpt-oss", "llama3.1", "hermes3", "deepseek-r1-qwen", "phi3.5",
            "glm-4.7", "granite-4", "gemma-4"]
# Families whose template writes tool calls (DeepSeek-R1's ignores `tools`; Phi-3.5's drops them).
TOOLS = {"qwen3", "qwen3-coder", "qwen3.5", "gpt-oss", "llama3.1", "hermes3", "glm-4.7", "granite-4", "gemma-4"}
# Thinking models, and whether the template leaves the block open (the model then starts in it).
THINKING = {"qwen3": False, "qwen3-coder": False, "qwen3.5": True, "deepseek-r1-qwen": True, "glm-4.7": True,
            "gemma-4": False}
NO_THINKING = {"chat_template_kwargs": {"enable_thinking": False}}
HELLO = [{"role": "user", "content": "What is the weather in Paris today?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6}},
                   "required": ["city"], "additionalProperties": False}}}
SCHEMA = {"type": "object", "properties": {"sunny": {"type": "boolean"}, "city": {"enum": ["Paris", "Rome"]}},
          "required": ["sunny", "city"], "additionalProperties": False}


@pytest.fixture(scope="module")
def zoo_stack(zoo_model) -> Iterator[Stack]:
    stack = start_stack([f"{family}={zoo_model(family)}" for family in FAMILIES], max_tokens=256)
    yield stack
    stop_stack(stack)


@pytest.fixture
def zoo(zoo_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{zoo_stack.http_base}/v1", api_key="x", max_retries=0)


def _chat(zoo: openai.OpenAI, family: str, **kwargs: Any) -> Any:
    extra = {**(NO_THINKING if family in THINKING else {}), **kwargs.pop("extra_body", {})}
    return zoo.chat.completions.create(model=family, messages=kwargs.pop("messages", HELLO),
                                       extra_body=extra, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_stream_matches_chat(zoo: openai.OpenAI, family: str) -> None:
    whole = _chat(zoo, family, max_tokens=10, temperature=0, seed=1)
    streamed = "".join(c.choices[0].delta.content or "" for c in
                       _chat(zoo, family, max_tokens=10, temperature=0, seed=1, stream=True) if c.choices)
    assert whole.choices[0].message.content == streamed
    assert whole.usage.completion_tokens <= 10


@pytest.mark.parametrize("family", FAMILIES)
def test_completions_logprobs_bytes_and_offsets(zoo: openai.OpenAI, family: str) -> None:
    reply = zoo.completions.create(model=family, prompt="The weather today is", max_tokens=8, temperature=0,
                                   logprobs=2, extra_body={"ignore_eos": True})
    choice = reply.choices[0]
    offsets = choice.logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets) and all(o <= len(choice.text) for o in offsets)
    assert all(lp <= 0 for lp in choice.logprobs.token_logprobs)
    chat = _chat(zoo, family, max_tokens=8, temperature=0, logprobs=True, top_logprobs=2,
                 extra_body={"ignore_eos": True})
    content = chat.choices[0].logprobs.content
    raw = b"".join(bytes(t.bytes) for t in content)
    # The tokens' own bytes spell the answer (SentencePiece: but for the leading space).
    assert raw.decode("utf-8", errors="replace").strip() == (chat.choices[0].message.content or "").strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_strings_across_token_boundaries(zoo: openai.OpenAI, family: str) -> None:
    free = _chat(zoo, family, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    text = free.choices[0].message.content
    stop = text[len(text) // 2: len(text) // 2 + 2]
    if not stop.strip():
        pytest.skip("the random answer has only spaces there")
    cut = _chat(zoo, family, max_tokens=16, temperature=0, stop=[stop], extra_body={"ignore_eos": True})
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.find(stop)]


@pytest.mark.parametrize("family", FAMILIES)
def test_json_schema_is_enforced(zoo: openai.OpenAI, family: str) -> None:
    bias = {}
    if family == "gpt-oss":  # a random model may write analysis until max_tokens: <|end|> closes it
        bias = {str(i): 30 for i, added in SPECS[family].added.items() if added.content == "<|end|>"}
    reply = _chat(zoo, family, max_tokens=40, seed=0, logit_bias=bias, response_format={
        "type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}})
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("choice", ["required", "named"])
def test_forced_tool_calls(zoo: openai.OpenAI, family: str, choice: str) -> None:
    tool_choice = "required" if choice == "required" else {"type": "function", "function": {"name": "get_weather"}}
    if family not in TOOLS:
        with pytest.raises(openai.BadRequestError) as refused:
            _chat(zoo, family, max_tokens=40, tools=[WEATHER], tool_choice=tool_choice)
        assert refused.value.body["param"] == "tools"
        return
    reply = _chat(zoo, family, max_tokens=200, tools=[WEATHER], tool_choice=tool_choice, seed=0)
    choice_ = reply.choices[0]
    assert choice_.finish_reason == "tool_calls" and not choice_.message.content
    (call,) = choice_.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


@pytest.mark.parametrize("family", sorted(TOOLS))
def test_tool_results_go_back_through_the_template(zoo: openai.OpenAI, family: str) -> None:
    history = [*HELLO, {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    reply = _chat(zoo, family, messages=history, max_tokens=4, tools=[WEATHER])
    assert reply.usage.prompt_tokens > _chat(zoo, family, max_tokens=1, tools=[WEATHER]).usage.prompt_tokens
    stream = _chat(zoo, family, messages=history, max_tokens=4, tools=[WEATHER], stream=True)
    assert [c for c in stream if c.choices and c.choices[0].finish_reason]


@pytest.mark.parametrize("family", FAMILIES)
def test_developer_role_reaches_every_template(zoo: openai.OpenAI, family: str) -> None:
    # Longer than the default system message a template writes when none is given (Granite 4.0's).
    developer = "Answer in French, in one short sentence that names the city, the sky and the temperature in C."
    reply = _chat(zoo, family, messages=[{"role": "developer", "content": developer}, *HELLO],
                  max_tokens=2)
    assert reply.usage.prompt_tokens > _chat(zoo, family, max_tokens=2).usage.prompt_tokens


def test_deepseek_r1_thinks_first_and_its_grammar_starts_after(zoo: openai.OpenAI, zoo_stack: Stack) -> None:
    """The template opens <think>: everything is reasoning until the model closes it."""
    thinking = zoo.chat.completions.create(model="deepseek-r1-qwen", messages=HELLO, max_tokens=8,
                                           extra_body={"ignore_eos": True})
    message = thinking.choices[0].message
    assert message.content == "" and message.model_extra["reasoning_content"]
    assert thinking.usage.completion_tokens_details.reasoning_tokens == 8
    deltas = [c.choices[0].delta for c in zoo.chat.completions.create(
        model="deepseek-r1-qwen", messages=HELLO, max_tokens=8, stream=True, extra_body={"ignore_eos": True})
        if c.choices]
    assert "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    end = zoo_stack.engine.registry.get("deepseek-r1-qwen").tokenizer.think_end_id
    answered = zoo.chat.completions.create(
        model="deepseek-r1-qwen", messages=HELLO, max_tokens=40, logit_bias={str(end): 100},
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})
    assert answered.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answered.choices[0].message.content), SCHEMA)


def test_qwen3_thinks_when_it_opens_the_block(zoo: openai.OpenAI, zoo_stack: Stack) -> None:
    start = zoo_stack.engine.registry.get("qwen3").tokenizer.think_start_id
    reply = zoo.chat.completions.create(model="qwen3", messages=HELLO, max_tokens=4, logit_bias={str(start): 100},
                                        extra_body={"ignore_eos": True})
    message = reply.choices[0].message
    assert message.content == "" and message.model_extra["reasoning_content"]
    off = zoo.chat.completions.create(model="qwen3", messages=HELLO, max_tokens=4, logit_bias={str(start): 100},
                                      extra_body={"ignore_eos": True, **NO_THINKING})
    assert off.choices[0].message.content and not off.choices[0].message.model_extra.get("reasoning_content")


@pytest.mark.parametrize("family", FAMILIES)
def test_reasoning_effort_follows_the_template(zoo: openai.OpenAI, family: str) -> None:
    if family in THINKING or family == "gpt-oss":
        assert zoo.chat.completions.create(model=family, messages=HELLO, max_tokens=1,
                                           reasoning_effort="low").usage.completion_tokens == 1
    else:
        with pytest.raises(openai.BadRequestError) as refused:
            zoo.chat.completions.create(model=family, messages=HELLO, max_tokens=1, reasoning_effort="low")
        assert refused.value.body["param"] == "reasoning_effort"


@pytest.mark.parametrize("family", ["qwen3", "llama3.1", "phi3.5", "gemma-4"])
def test_a_character_split_over_byte_tokens_is_held_back_until_whole(zoo_stack: Stack, family: str) -> None:
    """'€' as three byte tokens (byte-level BPE, or SentencePiece byte fallback) streams as
    nothing, nothing, '€': never a replacement character; and logprobs carry each byte."""
    from mlxrpc.engine.token_bytes import _byte_level_decoder

    model = zoo_stack.engine.registry.get(family)
    hf = model.tokenizer._tokenizer
    if family in ("phi3.5", "gemma-4"):
        ids = [hf.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "€".encode()]
    else:
        as_char = {b: c for c, b in _byte_level_decoder().items()}
        ids = [hf.convert_tokens_to_ids(as_char[b]) for b in "€".encode()]
    detokenizer = model.tokenizer.detokenizer
    pieces = []
    for token in ids:
        detokenizer.add_token(token)
        pieces.append(detokenizer.last_segment)
    assert pieces == ["", "", "€"]
    assert b"".join(model.token_bytes(t) for t in ids) == "€".encode()
