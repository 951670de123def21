"""Clients people use, unmodified, against the sidecar: instructor, LangChain, LiteLLM, pydantic-ai.

The "llama" demo model has random weights and a grammar that forces valid tool
calls and JSON, so these tests assert that each client's own parsing and
validation accept what the server sends, and that failures reach the caller
as the client's own error types; never what the model says. Greedy sampling
keeps every run the same. The schemas are closed (``extra="forbid"`` →
``additionalProperties: false``) and their strings bounded so the random model
always finishes the object within max_tokens.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Annotated, Any

import openai
import pytest
from pydantic import BaseModel, ConfigDict, Field

from .conftest import Stack
from .helpers import require_module

# LiteLLM's own typed dicts warn while pydantic builds their schemas.
pytestmark = pytest.mark.filterwarnings("ignore:Item.* `ReadOnly` qualifier:UserWarning")

LONG_PROMPT = "word " * 400  # > the 256-token context of "qwen"


class City(BaseModel):
    """A city."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=10)
    population: int = Field(ge=0, le=10_000_000)
    capital: bool


def get_weather(city: Annotated[str, Field(max_length=8)]) -> str:
    """Current weather in a city."""
    return "sunny"


@pytest.fixture
def base_url(stack: Stack) -> str:
    return f"{stack.http_base}/v1"


# ---------------------------------------------------------------- instructor

@pytest.mark.parametrize("mode", ["TOOLS", "TOOLS_STRICT", "JSON_SCHEMA"])
def test_instructor_extracts_a_valid_object(base_url: str, mode: str) -> None:
    instructor = require_module("instructor")

    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0),
                                    mode=instructor.Mode[mode])
    city, completion = client.chat.completions.create_with_completion(
        model="llama", response_model=City, max_retries=0, max_tokens=160, temperature=0,
        messages=[{"role": "user", "content": "Paris is the capital of France."}])
    assert isinstance(city, City)
    assert completion.choices[0].finish_reason in {"stop", "tool_calls"}


def test_instructor_json_mode_gets_a_json_object(base_url: str) -> None:
    """json_object promises an object, not the schema: a model whose fields all
    have defaults validates any object the grammar allows."""
    instructor = require_module("instructor")

    class Note(BaseModel):
        title: str = ""

    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0),
                                    mode=instructor.Mode.JSON)
    note = client.chat.completions.create(
        model="llama", response_model=Note, max_retries=0, max_tokens=160, temperature=0,
        messages=[{"role": "user", "content": "A note about Paris."}])
    assert isinstance(note, Note)


def test_instructor_async_and_partial_streaming(base_url: str) -> None:
    instructor = require_module("instructor")

    aclient = instructor.from_openai(openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0))
    city = asyncio.run(aclient.chat.completions.create(
        model="llama", response_model=City, max_retries=1, max_tokens=160, temperature=0,
        messages=[{"role": "user", "content": "Paris"}]))
    assert isinstance(city, City)

    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0))
    partials = list(client.chat.completions.create_partial(
        model="llama", response_model=City, max_retries=0, max_tokens=160, temperature=0,
        messages=[{"role": "user", "content": "Paris"}]))
    assert partials and City.model_validate(partials[-1].model_dump())


def test_instructor_surfaces_a_truncated_call(base_url: str) -> None:
    """Too few tokens for the whole call: instructor's own error, not a crash."""
    instructor = require_module("instructor")
    from instructor.core.exceptions import IncompleteOutputException, InstructorRetryException

    client = instructor.from_openai(openai.OpenAI(base_url=base_url, api_key="x", max_retries=0))
    with pytest.raises((IncompleteOutputException, InstructorRetryException)):
        client.chat.completions.create(model="llama", response_model=City, max_retries=0,
                                       max_tokens=8, temperature=0,
                                       messages=[{"role": "user", "content": "Paris"}])


# ----------------------------------------------------------------- LangChain

@pytest.fixture
def chat_openai(base_url: str) -> Callable[..., Any]:
    """ChatOpenAI on the sidecar: greedy, no retries, "llama" unless told."""
    langchain_openai = require_module("langchain_openai")

    def make(**kwargs: Any) -> Any:
        return langchain_openai.ChatOpenAI(base_url=base_url, api_key="x", max_retries=0,
                                           temperature=0,
                                           **{"model": "llama", "max_tokens": 160, **kwargs})

    return make


def test_langchain_invoke_and_stream(chat_openai: Callable[..., Any]) -> None:
    llm = chat_openai(max_tokens=8, stream_usage=True)
    message = llm.invoke("Hello")
    assert message.content and message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata["output_tokens"] == 8

    chunks = list(llm.stream("Hello"))
    whole = sum(chunks[1:], chunks[0])
    assert whole.content == message.content
    assert whole.usage_metadata["output_tokens"] == 8
    assert whole.response_metadata["finish_reason"] == "length"


@pytest.mark.parametrize("tool_choice", ["get_weather", "any", "required"])
def test_langchain_bind_tools(chat_openai: Callable[..., Any], tool_choice: str) -> None:
    llm = chat_openai().bind_tools([get_weather], tool_choice=tool_choice, strict=True)
    message = llm.invoke("What is the weather in Paris?")
    assert message.invalid_tool_calls == []
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and call["id"]
    assert len(call["args"]["city"]) <= 8


def test_langchain_streamed_tool_call_and_round_trip(chat_openai: Callable[..., Any]) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = chat_openai().bind_tools([get_weather], tool_choice="get_weather", strict=True)
    question = HumanMessage("What is the weather in Paris?")
    chunks = list(llm.stream([question]))
    message = sum(chunks[1:], chunks[0])
    [call] = message.tool_calls
    assert call["name"] == "get_weather" and len(call["args"]["city"]) <= 8

    # The tool's answer goes back; the model replies in text (tool_choice none).
    answer = ToolMessage(get_weather(**call["args"]), tool_call_id=call["id"])
    reply = chat_openai(max_tokens=6).bind_tools([get_weather], tool_choice="none").invoke(
        [question, message, answer])
    assert reply.tool_calls == [] and reply.content


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_with_structured_output(chat_openai: Callable[..., Any], method: str) -> None:
    structured = chat_openai().with_structured_output(City, method=method, include_raw=True)
    result = structured.invoke("Paris is the capital of France.")
    assert result["parsing_error"] is None
    assert isinstance(result["parsed"], City)


def test_langchain_context_overflow_is_its_own_error(chat_openai: Callable[..., Any]) -> None:
    from langchain_core.exceptions import ContextOverflowError

    llm = chat_openai(model="qwen", max_tokens=8)
    with pytest.raises(ContextOverflowError):
        llm.invoke(LONG_PROMPT)
    with pytest.raises(ContextOverflowError):
        list(llm.stream(LONG_PROMPT))


# ------------------------------------------------------------------- LiteLLM

@pytest.fixture(scope="module")
def litellm() -> Any:
    # Its price table comes from the network unless told to use the bundled copy.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return require_module("litellm")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
                   "required": ["city"], "additionalProperties": False}}}


def test_litellm_completion_and_stream(litellm: Any, base_url: str) -> None:
    kwargs = {"model": "openai/llama", "api_base": base_url, "api_key": "x", "num_retries": 0,
              "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]}
    response = litellm.completion(**kwargs)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 8

    chunks = list(litellm.completion(**kwargs, stream=True, stream_options={"include_usage": True}))
    rebuilt = litellm.stream_chunk_builder(chunks)
    assert rebuilt.choices[0].message.content
    assert rebuilt.choices[0].finish_reason == "length"
    assert rebuilt.usage.completion_tokens == 8


@pytest.mark.parametrize("stream", [False, True])
def test_litellm_tools(litellm: Any, base_url: str, stream: bool) -> None:
    response = litellm.completion(
        model="openai/llama", api_base=base_url, api_key="x", num_retries=0, max_tokens=120,
        temperature=0, messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL], tool_choice="required", stream=stream)
    if stream:
        response = litellm.stream_chunk_builder(list(response))
    assert response.choices[0].finish_reason == "tool_calls"
    [call] = response.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and call.id


@pytest.mark.parametrize("stream", [False, True])
def test_litellm_context_window_and_not_found(litellm: Any, base_url: str, stream: bool) -> None:
    kwargs = {"api_base": base_url, "api_key": "x", "num_retries": 0, "max_tokens": 8,
              "stream": stream}
    with pytest.raises(litellm.ContextWindowExceededError):
        response = litellm.completion(model="openai/qwen", **kwargs,
                                      messages=[{"role": "user", "content": LONG_PROMPT}])
        list(response) if stream else None
    with pytest.raises(litellm.NotFoundError):
        response = litellm.completion(model="openai/no-such-model", **kwargs,
                                      messages=[{"role": "user", "content": "x"}])
        list(response) if stream else None


# --------------------------------------------------------------- pydantic-ai

@pytest.fixture
def pai_model(base_url: str) -> Any:
    require_module("pydantic_ai")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    return OpenAIChatModel("llama", provider=OpenAIProvider(base_url=base_url, api_key="x"))


def test_pydantic_ai_native_output(pai_model: Any) -> None:
    from pydantic_ai import Agent, NativeOutput

    agent = Agent(pai_model, output_type=NativeOutput(City),
                  model_settings={"max_tokens": 160, "temperature": 0})
    result = agent.run_sync("Paris is the capital of France.")
    assert isinstance(result.output, City)
    assert result.usage.requests == 1 and result.usage.output_tokens > 0


def test_pydantic_ai_agent_with_a_tool_and_output_type(pai_model: Any) -> None:
    """The default tool output forces a tool call each turn; a random model may
    call the weather tool until the request limit (pydantic-ai's own error) or
    give the final result: both are a completed run, and every tool result went
    back to the server as a tool message it accepted."""
    from pydantic_ai import Agent, capture_run_messages
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai.messages import ToolCallPart, ToolReturnPart
    from pydantic_ai.usage import UsageLimits

    agent = Agent(pai_model, output_type=City, retries=1,
                  model_settings={"max_tokens": 160, "temperature": 0})
    agent.tool_plain(get_weather)
    with capture_run_messages() as messages:
        try:
            result = agent.run_sync("What is the weather in Paris?",
                                    usage_limits=UsageLimits(request_limit=3))
            assert isinstance(result.output, City)
        except UsageLimitExceeded:
            pass
    parts = [part for message in messages for part in message.parts]
    calls = [p for p in parts if isinstance(p, ToolCallPart)]
    assert calls and {c.tool_name for c in calls} <= {"get_weather", "final_result"}
    returns = [p for p in parts if isinstance(p, ToolReturnPart) and p.tool_name == "get_weather"]
    assert all(r.content == "sunny" for r in returns)
    assert len(returns) == sum(c.tool_name == "get_weather" for c in calls)


def test_pydantic_ai_streams_text(pai_model: Any) -> None:
    from pydantic_ai import Agent

    agent = Agent(pai_model, model_settings={"max_tokens": 12, "temperature": 0})

    async def run() -> tuple[str, Any]:
        async with agent.run_stream("Hello") as result:
            text = "".join([piece async for piece in result.stream_text(delta=True)])
        return text, result.usage

    text, usage = asyncio.run(run())
    assert text and usage.output_tokens == 12
